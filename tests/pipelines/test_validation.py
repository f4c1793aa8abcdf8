"""Each Great Expectations suite fails on the defect it exists for (and passes on a clean shard set)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.prepare import prepare
from pipelines.shards import shard_files
from pipelines.validation import validate_shard_set

from fixtures.rawroots import data_params, make_raw_root


@pytest.fixture(scope="module")
def clean(tmp_path_factory, datasets_dir):
    tmp = tmp_path_factory.mktemp("validation")
    raw = make_raw_root(tmp / "raw", datasets_dir)
    return prepare(data_params(raw, sources=("ckplus",)), tmp / "home")


@pytest.fixture
def copy(clean, tmp_path):
    target = tmp_path / clean.version
    shutil.copytree(clean.path, target)
    return target, json.loads((target / "manifest.json").read_text())


def rewrite_first_file(version_dir, change):
    path = shard_files(version_dir)[0]
    table = pq.read_table(path)
    pq.write_table(change(table), path)
    return path


def failing(version_dir, manifest):
    return {name for name, o in validate_shard_set(version_dir, manifest).items() if not o.success}


def test_clean_set_passes(copy):
    assert failing(*copy) == set()


def test_duplicate_id_fails_rows(copy):
    version_dir, manifest = copy
    ids = None

    def duplicate(table):
        nonlocal ids
        ids = table.column("id").to_pylist()
        ids[1] = ids[0]
        return table.set_column(
            table.schema.get_field_index("id"), table.schema.field("id"), pa.array(ids, pa.string())
        )

    rewrite_first_file(version_dir, duplicate)
    assert failing(version_dir, manifest) == {"rows"}


def test_short_pixels_and_bad_label_fail_rows(copy):
    version_dir, manifest = copy

    def corrupt(table):
        pixels = table.column("pixels").to_pylist()
        pixels[0] = pixels[0][:-1]
        labels = table.column("label").to_pylist()
        labels[1] = 9
        table = table.set_column(
            table.schema.get_field_index("pixels"), table.schema.field("pixels"), pa.array(pixels, pa.binary())
        )
        return table.set_column(
            table.schema.get_field_index("label"), table.schema.field("label"), pa.array(labels, pa.int8())
        )

    rewrite_first_file(version_dir, corrupt)
    outcomes = validate_shard_set(version_dir, manifest)
    failed = {
        e["expectation"] + ":" + str(e["kwargs"].get("column", e["kwargs"].get("column_A")))
        for e in outcomes["rows"].failures
    }
    assert "expect_column_pair_values_to_be_equal:pixels_bytes" in failed
    assert "expect_column_values_to_be_in_set:label" in failed


def test_null_subject_fails_rows_and_schema(copy):
    version_dir, manifest = copy

    def null_subject(table):
        subjects = table.column("subject").to_pylist()
        subjects[0] = None
        # written with a nullable field: the schema suite must notice the file no longer has the shard schema
        return table.set_column(table.schema.get_field_index("subject"), "subject", pa.array(subjects, pa.string()))

    rewrite_first_file(version_dir, null_subject)
    assert {"rows", "schema"} <= failing(version_dir, manifest)


def test_subject_in_two_splits_fails_subjects(copy):
    version_dir, manifest = copy
    train = [p for p in shard_files(version_dir) if "split=train" in str(p)][0]
    test = [p for p in shard_files(version_dir) if "split=test" in str(p)][0]
    test_subject = pq.read_table(test, columns=["subject"]).column("subject")[0].as_py()
    table = pq.read_table(train)
    subjects = table.column("subject").to_pylist()
    subjects[0] = test_subject
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("subject"), table.schema.field("subject"), pa.array(subjects, pa.string())
        ).cast(table.schema),
        train,
    )
    assert failing(version_dir, manifest) == {"subjects"}


def test_lost_rows_fail_conservation(copy):
    version_dir, manifest = copy
    rewrite_first_file(version_dir, lambda t: t.slice(1))
    assert failing(version_dir, manifest) == {"conservation"}


def test_dropped_quarantine_rows_fail_conservation(copy):
    version_dir, manifest = copy
    q = pq.read_table(version_dir / "quarantine.parquet")
    pq.write_table(
        q.filter(pc.not_equal(q.column("raw_path"), q.column("raw_path")[0])), version_dir / "quarantine.parquet"
    )
    assert failing(version_dir, manifest) == {"conservation"}
