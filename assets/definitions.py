"""emoflow's one Dagster ``Definitions``, built by a function from the loaded settings.

`dagster dev -w workspace.yaml` loads ``defs`` (lazily: ``@dagster.definitions``), which reads the params file
named by EMOFLOW_PARAMS (default: the project's params.yaml) once; the CLI calls ``build_definitions`` with the
settings it already loaded. Nothing here reads params at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, ExecutorDefinition, definitions, in_process_executor, multiprocess_executor

from assets.audit_assets import build_audit_assets
from assets.checks import SHARD_CHECKS
from assets.data_assets import build_data_assets
from assets.jobs import build_jobs
from assets.model_assets import build_model_assets
from assets.nfgan_assets import build_nfgan_assets
from assets.resources import EmoflowRuntime, MlflowTracking
from assets.schedules import build_retrain_schedule
from assets.scoreboard_assets import build_scoreboard_assets
from assets.sensors import build_new_shards_sensor
from pipelines.params import Params, load_params

# One process per run by default: a subprocess per step re-imports torch/GX (10-20 s each) for no gain on one
# machine. EMOFLOW_EXECUTOR=multiprocess runs independent steps side by side; beyond one machine, swap in
# dagster-celery's or dagster-k8s's executor here (see the README).
EXECUTORS: dict[str, ExecutorDefinition] = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}
# Loggers whose records Dagster copies into a run's event log (the instance's python_logs setting; see
# ``dagster_instance_yaml``): the libraries' own logging, beside the assets' context.log.
MANAGED_LOGGERS = ("pipelines", "flowmodels", "training", "runs", "scoring", "recognition", "adversarial")


def select_executor(name: str | None = None) -> ExecutorDefinition:
    name = name or os.environ.get("EMOFLOW_EXECUTOR", "in_process")
    if name not in EXECUTORS:
        raise ValueError(f"EMOFLOW_EXECUTOR={name!r}: choose one of {sorted(EXECUTORS)}")
    return EXECUTORS[name]


def dagster_instance_yaml() -> str:
    """The dagster.yaml emoflow writes into a Dagster home it creates: library logs in the event log, no telemetry."""
    loggers = "\n".join(f"    - {name}" for name in MANAGED_LOGGERS)
    return (
        f"python_logs:\n  python_log_level: INFO\n  managed_python_loggers:\n{loggers}\ntelemetry:\n  enabled: false\n"
    )


def build_definitions(
    settings: Params,
    home: Path | None = None,
    tracking_uri: str | None = None,
    progress_bars: bool = False,
    executor: str | None = None,
) -> Definitions:
    """Every asset, check, job, schedule and sensor for these settings; resources write under ``home``
    (default EMOFLOW_HOME)."""
    model_assets, by_variant = build_model_assets(settings)
    comparisons = build_scoreboard_assets(settings, [evaluate for _, evaluate in by_variant.values()])
    jobs = build_jobs()
    return Definitions(
        assets=[
            *build_data_assets(settings),
            *model_assets,
            *build_nfgan_assets(settings),
            *comparisons,
            *build_audit_assets(settings),
        ],
        asset_checks=SHARD_CHECKS,
        jobs=list(jobs.values()),
        schedules=[build_retrain_schedule(settings, jobs["train_and_evaluate"])],
        sensors=[build_new_shards_sensor(settings, jobs["train_and_evaluate"])],
        executor=select_executor(executor),
        resources={
            "runtime": EmoflowRuntime(home=str(home or ""), progress_bars=progress_bars),
            "mlflow_tracking": MlflowTracking.from_settings(settings.tracking, home, tracking_uri),
        },
    )


@definitions
def defs() -> Definitions:
    return build_definitions(load_params(os.environ.get("EMOFLOW_PARAMS")))
