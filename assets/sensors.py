"""Retrain when a new shard version appears (and its blocking checks passed)."""

from dagster import SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.jobs import train_and_evaluate_job
from assets.lineage import latest_shard_set
from assets.resources import EmoflowConfig
from assets.retraining import retrain_requests
from assets.tracking import MlflowTracking


@sensor(
    job=train_and_evaluate_job,
    minimum_interval_seconds=60,
    description="A new EmotionSet version (checks passed) retrains the champion variants.",
)
def new_shards_sensor(context: SensorEvaluationContext, emoflow: EmoflowConfig, mlflow_tracking: MlflowTracking):
    shard_set = latest_shard_set(context.instance)
    if shard_set is None:
        return SkipReason("no EmotionSet shards materialized yet")
    if context.cursor == shard_set.version:
        return SkipReason(f"shard set {shard_set.version} already handled")
    requests = retrain_requests(context.instance, emoflow, mlflow_tracking, reason="new shard version")
    if isinstance(requests, SkipReason):
        return requests  # cursor not advanced: checks may still be running; look again next tick
    return SensorResult(run_requests=requests, cursor=shard_set.version)
