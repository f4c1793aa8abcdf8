"""Dagster's string selections work in the project environment (antlr4-python3-runtime 4.13; DVC, whose
hydra-core pins 4.9, lives in its own environment): the CLI's ``--select`` and every job's
``define_asset_job(selection="…")`` parse and resolve to the assets they name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance

from assets.definitions import build_definitions
from pipelines.params import PROJECT_ROOT, load_params

from browser.browser_support import base_env
from fixtures.tiny_params import write_tiny_params


def test_antlr_runtime_is_the_one_dagster_needs():
    from importlib.metadata import version

    assert version("antlr4-python3-runtime").startswith("4.13."), "DVC's pin leaked into the project environment"


def test_dagster_asset_materialize_with_a_string_selection(tmp_path, datasets_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "mnist").symlink_to(datasets_dir / "mnist")
    params = write_tiny_params(tmp_path / "params.yaml", raw, ["jaffe"])
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    env = base_env(EMOFLOW_HOME=str(tmp_path / "home"), EMOFLOW_PARAMS=str(params), DAGSTER_HOME=str(dagster_home))
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "assets.definitions", "--select", "mnist_digits"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        event = instance.get_latest_materialization_event(AssetKey("mnist_digits"))
        assert event is not None, "the run left no materialization of mnist_digits"
        metadata = event.asset_materialization.metadata
        assert metadata["train_images"].value == 60000 and metadata["test_images"].value == 10000
        assert len(metadata["version"].value) == 16


def test_every_job_selection_resolves(tmp_path):
    params = write_tiny_params(tmp_path / "params.yaml", tmp_path / "raw", ["jaffe"])
    settings = load_params(params)
    defs = build_definitions(settings, home=tmp_path / "home")
    graph = defs.resolve_asset_graph()

    def keys(job: str) -> set[str]:
        return {key.to_user_string() for key in defs.resolve_job_def(job).asset_layer.selected_asset_keys}

    variants = set(settings.model.variants)
    assert keys("stage_sources") == {"staged_source"}
    assert keys("prepare_emotionset") == {"emotionset_shards"}
    assert keys("ablation") == {"mnist_digits", "ablation_table"}
    trained = keys("train_and_evaluate")
    assert "training_data" in trained and {f"train_{v}" for v in variants} <= trained, json.dumps(sorted(trained))
    assert {f"evaluate_{v}" for v in variants} <= trained
    assert trained <= {key.to_user_string() for key in graph.get_all_asset_keys()}
