"""Running a selection of the definitions' assets in a Dagster instance (the CLI's `emoflow run`, the tests)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import AssetSelection, DagsterInstance, Definitions, ExecuteInProcessResult, materialize

from assets.definitions import dagster_instance_yaml


def dagster_instance(home: Path) -> DagsterInstance:
    """A persistent Dagster instance (DAGSTER_HOME, default $EMOFLOW_HOME/dagster), so `dagster dev` later shows
    these runs; a new home gets emoflow's dagster.yaml (library logs in the event log, no telemetry)."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or home / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        config.write_text(dagster_instance_yaml())
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return DagsterInstance.get()


def materialize_keys(
    defs: Definitions,
    keys: Sequence[str],
    instance: DagsterInstance,
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = False,
) -> ExecuteInProcessResult:
    """Materialize the assets named ``keys`` (and their checks) from ``defs``, upstream inputs loaded from the
    instance's earlier materializations."""
    return materialize(
        [*defs.assets, *(defs.asset_checks or [])],
        selection=AssetSelection.assets(*keys),
        resources=dict(defs.resources),
        instance=instance,
        partition_key=partition_key,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def train_run_config(variant: str, max_steps: int | None, *more: str) -> dict[str, Any]:
    """Run config giving ``train_<variant>`` (and ``train_<v>`` of each of ``more``) a step budget (their
    ``TrainRunConfig``)."""
    if not max_steps:
        return {}
    return {"ops": {f"train_{v}": {"config": {"max_steps": int(max_steps)}} for v in (variant, *more)}}
