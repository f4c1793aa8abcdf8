"""The retraining schedule (cron from params.yaml's retrain.cron)."""

from dagster import ScheduleDefinition, ScheduleEvaluationContext, schedule

from assets.resources import MlflowTracking
from assets.retraining import retrain_requests
from pipelines.params import Params


def build_retrain_schedule(settings: Params, job) -> ScheduleDefinition:
    @schedule(
        job=job,
        cron_schedule=settings.retrain.cron,
        description="Retrain the champion variants on the latest shard set whose blocking checks passed.",
    )
    def retrain_schedule(context: ScheduleEvaluationContext, mlflow_tracking: MlflowTracking):
        return retrain_requests(context.instance, settings, mlflow_tracking, reason="schedule")

    return retrain_schedule
