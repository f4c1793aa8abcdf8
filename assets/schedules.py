"""The retraining schedule (cron from params.yaml's retrain.cron)."""

from dagster import ScheduleEvaluationContext, schedule

from assets.jobs import train_and_evaluate_job
from assets.resources import EmoflowConfig, default_params_path
from assets.retraining import retrain_requests
from assets.tracking import MlflowTracking
from pipelines.params import load_params


@schedule(
    job=train_and_evaluate_job,
    cron_schedule=load_params(default_params_path()).retrain.cron,
    description="Retrain the champion variants on the latest shard set whose blocking checks passed.",
)
def retrain_schedule(context: ScheduleEvaluationContext, emoflow: EmoflowConfig, mlflow_tracking: MlflowTracking):
    return retrain_requests(context.instance, emoflow, mlflow_tracking, reason="schedule")
