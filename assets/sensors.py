"""Retrain when a new shard version appears (and its blocking checks passed)."""

from dagster import SensorDefinition, SensorEvaluationContext, SensorResult, SkipReason, sensor

from assets.lineage import latest_shard_set
from assets.resources import MlflowTracking
from assets.retraining import retrain_requests
from pipelines.params import Params


def build_new_shards_sensor(settings: Params, job) -> SensorDefinition:
    @sensor(
        job=job,
        minimum_interval_seconds=60,
        description="A new EmotionSet version (checks passed) retrains the champion variants.",
    )
    def new_shards_sensor(context: SensorEvaluationContext, mlflow_tracking: MlflowTracking):
        shard_set = latest_shard_set(context.instance)
        if shard_set is None:
            return SkipReason("no EmotionSet shards materialized yet")
        if context.cursor == shard_set.version:
            return SkipReason(f"shard set {shard_set.version} already handled")
        requests = retrain_requests(context.instance, settings, mlflow_tracking, reason="new shard version")
        if isinstance(requests, SkipReason):
            return requests  # cursor not advanced: checks may still be running; look again next tick
        return SensorResult(run_requests=requests, cursor=shard_set.version)

    return new_shards_sensor
