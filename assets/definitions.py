"""The one Dagster ``Definitions`` for emoflow: `dagster dev -w workspace.yaml` loads this module."""

import os

from dagster import Definitions, ExecutorDefinition, in_process_executor, multiprocess_executor

from assets.checks import SHARD_CHECKS
from assets.data_assets import emotionset_shards, staged_source
from assets.jobs import ablation_job, prepare_emotionset_job, stage_sources_job, train_and_evaluate_job
from assets.model_assets import EVALUATE_ASSETS, TRAIN_ASSETS, ablation_table, mnist_digits
from assets.resources import EmoflowConfig, default_params_path
from assets.schedules import retrain_schedule
from assets.sensors import new_shards_sensor
from assets.tracking import MlflowTracking
from pipelines.params import load_params

_tracking = load_params(default_params_path()).tracking

# One process per run by default: a subprocess per step re-imports torch/GX (10-20 s each) for no gain on one
# machine. EMOFLOW_EXECUTOR=multiprocess runs independent steps side by side; beyond one machine, swap in
# dagster-celery's or dagster-k8s's executor here (see the README).
EXECUTORS: dict[str, ExecutorDefinition] = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}


def select_executor(name: str | None = None) -> ExecutorDefinition:
    name = name or os.environ.get("EMOFLOW_EXECUTOR", "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"EMOFLOW_EXECUTOR={name!r}: choose one of {sorted(EXECUTORS)}")
    return EXECUTORS[name]


defs = Definitions(
    assets=[staged_source, emotionset_shards, mnist_digits, *TRAIN_ASSETS, *EVALUATE_ASSETS, ablation_table],
    asset_checks=SHARD_CHECKS,
    jobs=[stage_sources_job, prepare_emotionset_job, train_and_evaluate_job, ablation_job],
    schedules=[retrain_schedule],
    sensors=[new_shards_sensor],
    executor=select_executor(),
    resources={
        "emoflow": EmoflowConfig(),
        "mlflow_tracking": MlflowTracking(tracking_uri=_tracking.uri or "", experiment=_tracking.experiment),
    },
)
