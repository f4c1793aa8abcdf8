"""Fixtures for the faces stage: real images read in place from the shared datasets (never copied)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.faces import FaceAligner, as_array
from pipelines.params import FaceParams
from pipelines.records import RawRecord


def make_record(image: np.ndarray, raw_path: str, *, source: str = "test", precropped: bool = False, **kw) -> RawRecord:
    return RawRecord(
        source=source,
        subject=kw.pop("subject", "s1"),
        source_label=kw.pop("source_label", None),
        image=image,
        raw_path=raw_path,
        content_hash=kw.pop("content_hash", f"hash-{raw_path}"),
        precropped=precropped,
        **kw,
    )


@pytest.fixture(name="make_record", scope="session")
def make_record_fixture():
    """make_record(image, raw_path, source=..., precropped=..., **RawRecord fields) -> RawRecord."""
    return make_record


@pytest.fixture(scope="session")
def photos_dir(datasets_dir: Path) -> Path:
    return datasets_dir / "faces"


@pytest.fixture(scope="session")
def photo(photos_dir: Path):
    """photo('ivan') -> the image as a uint8 RGB array."""

    def load(name: str) -> np.ndarray:
        return as_array(Image.open(photos_dir / f"{name}.jpg"))

    return load


@pytest.fixture(scope="session")
def jaffe_paths(datasets_dir: Path) -> list[Path]:
    paths = sorted((datasets_dir / "jaffe" / "jaffe").glob("*.tiff"))
    assert len(paths) == 213, f"expected JAFFE's 213 images, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def jaffe_records(jaffe_paths: list[Path]) -> list[RawRecord]:
    # KA.AN1.39.tiff: subject KA, expression AN
    return [
        make_record(as_array(Image.open(p)), p.name, source="jaffe", subject=p.name[:2], source_label=p.name[3:5])
        for p in jaffe_paths
    ]


@pytest.fixture(scope="session")
def aligner48() -> FaceAligner:
    return FaceAligner(FaceParams(), (48, 48))


@pytest.fixture(scope="session")
def jaffe_out48(aligner48: FaceAligner, jaffe_records: list[RawRecord]) -> list:
    return list(aligner48.process(jaffe_records))
