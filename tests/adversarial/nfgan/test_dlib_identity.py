"""dlib's ResNet face embedding as the independent identity metric: it separates same from different people on
real JAFFE faces as the shards hold them (64x64 aligned crops; the subject is the poser, the initials that start each
JAFFE file name, e.g. KA.AN1.39.tiff)."""

from __future__ import annotations

import numpy as np
import pytest

from adversarial.nfgan.dlib_identity import (
    SAME_PERSON_THRESHOLD,
    embed_faces,
    identity_distances,
    model_files,
    same_and_different_distances,
)
from pipelines.shards import decode_pixels, read_shards


@pytest.fixture(scope="module")
def jaffe_faces(jaffe64):
    """Six faces of each of five posers (30 faces: dlib takes about a quarter of a second per face here)."""
    rows = read_shards(jaffe64.path, columns=["subject", "raw_path", "pixels"]).to_pylist()
    chosen: dict[str, list[dict]] = {}
    for row in sorted(rows, key=lambda r: r["raw_path"]):
        chosen.setdefault(row["subject"], [])
        if len(chosen[row["subject"]]) < 6:
            chosen[row["subject"]].append(row)
    picked = [r for subject in sorted(chosen)[:5] for r in chosen[subject]]
    for r in picked:  # the reader's subject is the file name's poser initials
        assert r["raw_path"].rsplit("/", 1)[-1].split(".")[0] == r["subject"]
    faces = decode_pixels([r["pixels"] for r in picked], 64, 64)
    return faces, np.array([r["subject"] for r in picked])


def test_the_models_ship_in_the_package():
    landmarks, embedding = model_files()
    assert landmarks.stat().st_size > 50e6 and embedding.stat().st_size > 20e6


def test_dlib_separates_same_from_different_people_on_jaffe(jaffe_faces):
    faces, subjects = jaffe_faces
    embeddings = embed_faces(faces)
    assert embeddings.shape == (len(faces), 128) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all() and (np.linalg.norm(embeddings, axis=1) > 0.5).all()
    same, different = same_and_different_distances(embeddings, subjects)
    assert len(same) == 5 * 15 and len(different) == 30 * 29 // 2 - 75
    assert np.median(same) < SAME_PERSON_THRESHOLD
    assert np.median(same) < np.median(different)
    # the same faces in (N, 1, H, W) give the same descriptors; a face against itself is at distance 0
    assert np.allclose(embed_faces(faces[:3, None]), embeddings[:3], atol=1e-5)
    assert np.allclose(identity_distances(faces[:3], faces[:3]), 0.0, atol=1e-5)
    paired = identity_distances(faces[:6], faces[6:12])  # poser 1's faces against poser 2's, one to one
    assert paired.shape == (6,) and np.median(paired) > np.median(same)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="gray uint8"):
        embed_faces(np.zeros((2, 64, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="one to one"):
        identity_distances(np.zeros((2, 64, 64), np.uint8), np.zeros((3, 64, 64), np.uint8))
