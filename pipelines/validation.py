"""Great Expectations (1.x) suites over a shard set: the blocking checks every shard set must pass.

Suites (each is one Dagster asset check, and ``emoflow shards validate`` runs them all):

- ``schema``: every file has exactly the documented Arrow schema; the table has the documented columns in order.
- ``rows``: no nulls in required columns, labels in the 7-emotion scheme and consistent with their names, splits
  known, pixel bytes = height*width for both pixel columns, faces of the params' size, unique ids.
- ``subjects``: no (source, subject) in two splits.
- ``conservation``: rows in = rows out + rows quarantined, per source and in total, counted from the files.
- ``duplicates``: no duplicate group spans splits (no test face seen in training). The groups are found again on
  the written rows, with the settings the manifest's ``audit`` section records, so the check confirms the policy's
  result rather than trusting it.

The row-level frame is built from metadata columns plus the pixel columns' byte lengths, batch by batch, so the
pixel bytes themselves are never held in memory at once.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.labels import EMOTIONS
from pipelines.shards import QUARANTINE_SCHEMA, REQUIRED_COLUMNS, SHARD_SCHEMA, iter_shard_batches, shard_files

SUITES = ("schema", "rows", "subjects", "conservation", "duplicates")
_META_COLUMNS = [c for c in SHARD_SCHEMA.names if c not in ("pixels", "pixels_svd", "box")]


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    expectations: list[dict[str, Any]] = field(default_factory=list)  # one entry per expectation
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.expectations if not e["success"]]


def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)


@lru_cache(maxsize=1)
def _context():
    """One ephemeral GX context per process (each new one leaves a temporary docs folder behind)."""
    _quiet_gx()
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:  # progress bars are noise in logs and tests
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # older/newer config shapes: progress bars are cosmetic
        pass
    return context


def _run_suite(name: str, frame, expectations: list) -> SuiteOutcome:
    """Run expectations over a pandas frame (its own data source, suite and definition, removed afterwards)."""
    import great_expectations as gx

    context = _context()
    tag = uuid.uuid4().hex[:8]
    source = context.data_sources.add_pandas(f"emoflow-{tag}")
    asset = source.add_dataframe_asset(name=f"{name}-{tag}")
    batch = asset.add_batch_definition_whole_dataframe(f"all-{tag}")
    suite = context.suites.add(gx.ExpectationSuite(name=f"emotionset-{name}-{tag}"))
    for expectation in expectations:
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name}-{tag}", data=batch, suite=suite)
    )
    try:
        result = definition.run(batch_parameters={"dataframe": frame})
    finally:
        context.validation_definitions.delete(definition.name)
        context.suites.delete(suite.name)
        context.data_sources.delete(source.name)
    entries = []
    for r in result.results:
        config = r.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
        observed = {
            k: v
            for k, v in (r.result or {}).items()
            if k in ("observed_value", "unexpected_count", "partial_unexpected_list", "element_count")
        }
        entries.append(
            {
                "expectation": config.type,
                "kwargs": _jsonable(kwargs),
                "success": bool(r.success),
                "result": _jsonable(observed),
            }
        )
    return SuiteOutcome(name, bool(result.success), entries)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def shard_metadata_frame(version_dir: Path):
    """Metadata columns plus pixel byte lengths for every row, as one pandas frame."""
    import pandas as pd

    tables = []
    for batch in iter_shard_batches(version_dir, columns=[*_META_COLUMNS, "pixels", "pixels_svd", "box"]):
        t = pa.Table.from_batches([batch])
        t = t.select(_META_COLUMNS)
        t = t.append_column("pixels_bytes", pc.binary_length(batch.column("pixels")).cast(pa.int64()))
        t = t.append_column("pixels_svd_bytes", pc.binary_length(batch.column("pixels_svd")).cast(pa.int64()))
        t = t.append_column("box_values", pc.list_value_length(batch.column("box")).cast(pa.int64()))
        tables.append(t)
    if not tables:
        return pd.DataFrame(columns=[*_META_COLUMNS, "pixels_bytes", "pixels_svd_bytes", "box_values"])
    table = pa.concat_tables(tables, promote_options="permissive")  # a tampered file may differ in nullability
    frame = table.to_pandas()
    frame["expected_bytes"] = frame["height"].astype("int64") * frame["width"].astype("int64")
    return frame


def validate_schema(version_dir: Path) -> SuiteOutcome:
    import great_expectations as gx  # noqa: F401  (imported lazily: slow)
    import pandas as pd

    mismatched = []
    for path in shard_files(version_dir):
        schema = pq.read_schema(path)
        if not schema.equals(SHARD_SCHEMA, check_metadata=False):
            mismatched.append(path.relative_to(version_dir).as_posix())
    quarantine = Path(version_dir) / "quarantine.parquet"
    quarantine_ok = quarantine.exists() and pq.read_schema(quarantine).equals(QUARANTINE_SCHEMA, check_metadata=False)
    files = shard_files(version_dir)
    columns = pq.read_schema(files[0]).names if files else []
    frame = pd.DataFrame({c: pd.Series([], dtype="object") for c in columns})
    outcome = _run_suite(
        "schema", frame, [gx.expectations.ExpectTableColumnsToMatchOrderedList(column_list=list(SHARD_SCHEMA.names))]
    )
    outcome.expectations.append(
        {
            "expectation": "every_file_has_the_shard_schema",
            "kwargs": {},
            "success": not mismatched and bool(files),
            "result": {"mismatched_files": mismatched, "files": len(files)},
        }
    )
    outcome.expectations.append(
        {"expectation": "quarantine_table_has_its_schema", "kwargs": {}, "success": quarantine_ok, "result": {}}
    )
    outcome.success = all(e["success"] for e in outcome.expectations)
    outcome.stats = {"files": len(files)}
    return outcome


def validate_rows(frame, image_size: tuple[int, int]) -> SuiteOutcome:
    """``frame``: ``shard_metadata_frame(version_dir)``."""
    import great_expectations as gx

    E = gx.expectations
    h, w = image_size
    expectations = [E.ExpectTableRowCountToBeBetween(min_value=1)]
    for column in REQUIRED_COLUMNS:
        if column in ("pixels", "pixels_svd"):
            column = f"{column}_bytes"  # a null pixel value has a null length
        elif column == "box":
            column = "box_values"
        expectations.append(E.ExpectColumnValuesToNotBeNull(column=column))
    expectations += [
        E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(len(EMOTIONS)))),
        E.ExpectColumnValuesToBeInSet(column="label_name", value_set=list(EMOTIONS)),
        E.ExpectColumnPairValuesToBeInSet(
            column_A="label", column_B="label_name", value_pairs_set=[(i, name) for i, name in enumerate(EMOTIONS)]
        ),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "val", "test"]),
        E.ExpectColumnValuesToBeInSet(column="height", value_set=[h]),
        E.ExpectColumnValuesToBeInSet(column="width", value_set=[w]),
        E.ExpectColumnPairValuesToBeEqual(column_A="pixels_bytes", column_B="expected_bytes"),
        E.ExpectColumnPairValuesToBeEqual(column_A="pixels_svd_bytes", column_B="expected_bytes"),
        E.ExpectColumnValuesToBeInSet(column="box_values", value_set=[4]),
        E.ExpectColumnValuesToBeUnique(column="id"),
    ]
    outcome = _run_suite("rows", frame, expectations)
    outcome.stats = {"rows": int(len(frame))}
    return outcome


def validate_subjects(frame) -> SuiteOutcome:
    """``frame``: ``shard_metadata_frame(version_dir)``."""
    import great_expectations as gx

    frame = frame[["source", "subject", "split"]].drop_duplicates()
    outcome = _run_suite(
        "subjects", frame, [gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["source", "subject"])]
    )
    outcome.stats = {"subjects": int(frame[["source", "subject"]].drop_duplicates().shape[0])}
    return outcome


def validate_conservation(version_dir: Path, manifest: dict) -> SuiteOutcome:
    """Rows in (what the readers found, per the manifest) = rows in the files + rows in the quarantine table."""
    import great_expectations as gx
    import pandas as pd

    out_by_source: dict[str, int] = {}
    for path in shard_files(version_dir):
        source = path.parent.name.split("=", 1)[1]
        out_by_source[source] = out_by_source.get(source, 0) + pq.ParquetFile(path).metadata.num_rows
    quarantine = (
        pq.read_table(Path(version_dir) / "quarantine.parquet", columns=["source"]).column("source").to_pylist()
    )
    quarantined_by_source: dict[str, int] = {}
    for source in quarantine:
        quarantined_by_source[source] = quarantined_by_source.get(source, 0) + 1
    sources = sorted(manifest.get("sources", {}))
    rows_in_by_source = {s: manifest["sources"][s]["rows_in"] for s in sources}  # as the readers counted them
    frame = pd.DataFrame(
        {
            "source": sources + ["(all)"],
            "rows_in": [rows_in_by_source[s] for s in sources] + [manifest["rows_in"]],
            "rows_out_plus_quarantined": [out_by_source.get(s, 0) + quarantined_by_source.get(s, 0) for s in sources]
            + [sum(out_by_source.values()) + len(quarantine)],
        }
    )
    outcome = _run_suite(
        "conservation",
        frame,
        [gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="rows_in", column_B="rows_out_plus_quarantined")],
    )
    outcome.stats = {
        "rows_in": int(manifest["rows_in"]),
        "rows_out": int(sum(out_by_source.values())),
        "rows_quarantined": len(quarantine),
    }
    return outcome


def validate_duplicates(version_dir: Path, manifest: dict) -> SuiteOutcome:
    """Every duplicate group of the written rows lies in one split."""
    import great_expectations as gx
    import pandas as pd

    from pipelines.audit.shard_audit import audit_shard_set
    from pipelines.params import AuditParams, DuplicateParams

    recorded = manifest.get("audit", {})
    policy = DuplicateParams(
        **{k: recorded[k] for k in ("near_distance", "max_cell_error") if k in recorded},
    )
    audit = audit_shard_set(Path(version_dir), AuditParams(duplicates=policy))
    pairs = sorted({(g.group, split) for g in audit.groups for split in g.splits})
    frame = pd.DataFrame(pairs, columns=["group", "split"]) if pairs else pd.DataFrame({"group": [], "split": []})
    outcome = _run_suite("duplicates", frame, [gx.expectations.ExpectColumnValuesToBeUnique(column="group")])
    outcome.stats = {
        "duplicate_groups": len(audit.groups),
        "cross_split_groups": sum(g.cross_split for g in audit.groups),
        "near_distance": policy.near_distance,
        "max_cell_error": policy.max_cell_error,
    }
    return outcome


def validate_shard_set(version_dir: Path, manifest: dict) -> dict[str, SuiteOutcome]:
    """Every suite, by name."""
    frame = shard_metadata_frame(version_dir)
    return {
        "schema": validate_schema(version_dir),
        "rows": validate_rows(frame, tuple(manifest["image_size"])),
        "subjects": validate_subjects(frame),
        "conservation": validate_conservation(version_dir, manifest),
        "duplicates": validate_duplicates(version_dir, manifest),
    }
