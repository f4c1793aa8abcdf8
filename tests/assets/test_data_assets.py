"""The data assets and their blocking checks, materialized in a real Dagster instance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from assets.definitions import build_definitions
from assets.runner import materialize_keys
from pipelines.params import DEFAULT_PARAMS_PATH, load_params

from fixtures.rawroots import make_raw_root


def write_params(path: Path, raw_root: Path, sources) -> Path:
    params = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())
    params["data"]["raw_root"] = str(raw_root)
    params["data"]["sources"] = list(sources)
    path.write_text(yaml.safe_dump(params))
    return path


def test_definitions_load_with_checks_and_jobs():
    defs = build_definitions(load_params())
    keys = defs.resolve_all_asset_keys()
    assert {AssetKey("staged_source"), AssetKey("emotionset_shards")} <= set(keys)
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {
        "shards_schema",
        "shards_rows",
        "shards_subject_independent",
        "shards_rows_conserved",
        "shards_no_duplicates_across_splits",
    } <= checks
    assert {"stage_sources", "prepare_emotionset"} <= {j.name for j in defs.resolve_all_job_defs()}


def test_materialize_partition_then_emotionset_with_blocking_checks(tmp_path, datasets_dir):
    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    params = write_params(tmp_path / "params.yaml", raw, ["jaffe", "ckplus"])
    defs = build_definitions(load_params(params), home=tmp_path / "home")
    (tmp_path / "dagster").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        staged = materialize_keys(defs, ["staged_source"], instance, partition_key="ckplus")
        assert staged.success
        meta = staged.asset_materializations_for_node("staged_source")[0].metadata
        assert meta["rows_in"].value == 981 and meta["rows_out"].value == 927 and meta["rows_quarantined"].value == 54
        assert meta["reused"].value is False

        result = materialize_keys(defs, ["emotionset_shards"], instance)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name: e.passed for e in evaluations} == {
            "shards_schema": True,
            "shards_rows": True,
            "shards_subject_independent": True,
            "shards_rows_conserved": True,
            "shards_no_duplicates_across_splits": True,
        }
        materialization = result.asset_materializations_for_node("emotionset_shards")[0]
        # the audit in the event log: its counts, the quarantine by reason, and a picture of example groups
        audit = {r.data["finding"]: r.data["count"] for r in materialization.metadata["audit"].value.records}
        manifest_audit = json.loads((Path(result.output_for_node("emotionset_shards")) / "manifest.json").read_text())
        assert audit == {k: manifest_audit["audit"][k] for k in audit} and "cross_split_groups" in audit
        assert materialization.metadata["audit_duplicate_groups"].value.startswith("**example duplicate groups**")
        version = materialization.metadata["version"].value
        path = Path(result.output_for_node("emotionset_shards"))
        assert path.name == version and json.loads((path / "manifest.json").read_text())["rows"] == 927 + 213
        assert materialization.tags["dagster/data_version"] == version

        # the instance remembers it: the latest materialization carries the shard version
        record = instance.get_latest_materialization_event(AssetKey("emotionset_shards"))
        assert record.asset_materialization.metadata["version"].value == version

        again = materialize_keys(defs, ["emotionset_shards"], instance)
        again_meta = again.asset_materializations_for_node("emotionset_shards")[0].metadata
        assert again_meta["version"].value == version and again_meta["reused"].value is True


def test_blocking_check_failure_fails_the_run(tmp_path, datasets_dir):
    """A shard set that fails a suite must stop the run (blocking check), not pass silently."""
    import pyarrow.parquet as pq

    from pipelines.prepare import prepare
    from pipelines.shards import shard_files

    from fixtures.rawroots import data_params

    raw = make_raw_root(tmp_path / "raw", datasets_dir)
    params = write_params(tmp_path / "params.yaml", raw, ["ckplus"])
    home = tmp_path / "home"
    shard_set = prepare(data_params(raw, sources=("ckplus",)), home)
    first = shard_files(shard_set.path)[0]
    pq.write_table(pq.read_table(first).slice(1), first)  # lose a row behind the manifest's back
    defs = build_definitions(load_params(params), home=home)
    (tmp_path / "dagster").mkdir()
    # a persistent instance: schedule contexts need an instance reference, which an ephemeral one lacks
    with DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance:
        result = materialize_keys(defs, ["emotionset_shards"], instance)
        evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evaluations["shards_rows_conserved"] is False
        assert not result.success

        # retraining waits for shards whose blocking checks passed: the sensor and the schedule stand down
        from dagster import SkipReason, build_schedule_context, build_sensor_context

        resources = dict(defs.resources)
        new_shards_sensor = defs.resolve_sensor_def("new_shards_sensor")
        retrain_schedule = defs.resolve_schedule_def("retrain_schedule")
        with build_sensor_context(instance=instance, resources=resources) as context:
            skipped = new_shards_sensor(context)
        assert isinstance(skipped, SkipReason) and shard_set.version in skipped.skip_message
        assert "shards_rows_conserved" in skipped.skip_message
        with build_schedule_context(instance=instance, resources=resources) as context:
            assert isinstance(retrain_schedule(context), SkipReason)


def test_executor_is_chosen_by_environment():
    from dagster import in_process_executor, multiprocess_executor

    from assets.definitions import select_executor

    assert select_executor("in_process") is in_process_executor
    assert select_executor("multiprocess") is multiprocess_executor
    with pytest.raises(ValueError, match="in_process.*multiprocess"):
        select_executor("celery")
