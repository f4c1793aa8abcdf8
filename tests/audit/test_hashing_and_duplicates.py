"""The audit's numerics on hand-made and real faces: the DCT hash against its formula, candidate search against
brute force, the cell comparison, grouping and the policy's decisions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipelines.audit.duplicates import (
    AuditRows,
    candidate_pairs,
    cell_errors,
    decide,
    group_labels,
    near_pairs,
    summarize_groups,
)
from pipelines.audit.hashing import HASH_BITS, hamming, low_frequencies, perceptual_hash, pixel_digest
from pipelines.params import SPLITS, DuplicateParams
from pipelines.records import QuarantineReason


@pytest.fixture(scope="module")
def ck_faces(datasets_dir):
    """CK+48's happy crops, one per subject (the first file of each), as (N, 48, 48) uint8."""
    folder = datasets_dir / "ckplus48" / "CK+48" / "happy"
    seen, faces = set(), []
    for path in sorted(folder.glob("*.png")):
        subject = path.name.split("_")[0]
        if subject not in seen:
            seen.add(subject)
            faces.append(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    return np.stack(faces)


def test_low_frequencies_are_the_dct_ii_formula():
    face = np.random.default_rng(0).integers(0, 256, (1, 12, 10), dtype=np.uint8)
    got = low_frequencies(face)[0]
    x, y = np.arange(12), np.arange(10)
    for u in range(8):
        for v in range(8):
            want = sum(
                float(face[0, i, j]) * np.cos(np.pi * (2 * x[i] + 1) * u / 24) * np.cos(np.pi * (2 * y[j] + 1) * v / 20)
                for i in range(12)
                for j in range(10)
            )
            assert got[u, v] == pytest.approx(want, rel=1e-4, abs=1e-2)


def test_hash_bits_brightness_and_copies(ck_faces):
    hashes = perceptual_hash(ck_faces)
    assert hashes.dtype == np.int64 and (hashes >= 0).all() and (hashes < 2**HASH_BITS).all()
    assert set(np.bitwise_count(hashes)) == {31}  # the median split of 63 coefficients
    assert (perceptual_hash(ck_faces // 2 + 40) == perceptual_hash(ck_faces // 2)).all()  # DC dropped: offsets vanish
    recoded = np.stack(
        [
            cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_GRAYSCALE)
            for f in ck_faces
        ]
    )
    assert np.percentile(hamming(hashes, perceptual_hash(recoded)), 95) <= DuplicateParams().near_distance
    assert pixel_digest(ck_faces[0].tobytes()) == pixel_digest(ck_faces[0].copy().tobytes())
    assert pixel_digest(ck_faces[0].tobytes()) != pixel_digest(ck_faces[1].tobytes())


@pytest.mark.parametrize("distance", [0, 3, 6, 10])
def test_candidate_search_equals_brute_force(distance):
    rng = np.random.default_rng(distance)
    base = rng.integers(0, 2**HASH_BITS, 300, dtype=np.int64)
    counts = rng.integers(0, 12, 300)
    flips = [np.bitwise_or.reduce(1 << rng.choice(HASH_BITS, k, replace=False)) if k else 0 for k in counts]
    hashes = np.concatenate([base, base ^ np.asarray(flips, dtype=np.int64)])
    got = near_pairs(hashes, distance)
    d = hamming(hashes[:, None], hashes[None, :])
    i, j = np.nonzero(np.triu(d <= distance, 1))
    assert got.tolist() == sorted([a, b] for a, b in zip(i.tolist(), j.tolist()))
    planted = {(k, k + 300) for k in np.flatnonzero(counts <= distance).tolist()}
    assert planted and planted <= {tuple(p) for p in got.tolist()}  # every planted copy within reach is found


def test_cell_errors_tell_copies_from_other_faces(ck_faces):
    first = ck_faces[:20]
    shifted = np.roll(first, 1, axis=1)
    recoded = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], 0) for f in shifted])
    limit = DuplicateParams().max_cell_error
    assert cell_errors(first, first).max() == pytest.approx(0.0, abs=1e-6)
    assert cell_errors(first, recoded).max() < limit  # re-encoded, shifted copies pass
    assert cell_errors(first, ck_faces[20:40]).min() > limit  # other people's happy faces do not


def _rows(phash, digest, split=None, label=None, subject=None, content=None) -> AuditRows:
    """AuditRows of one source from readable values: splits by name, subjects and digests as strings."""
    n = len(phash)
    subject = subject or [f"p{i}" for i in range(n)]
    return AuditRows(
        source=np.zeros(n, dtype=np.int8),
        subject=np.asarray([int(s.lstrip("p")) for s in subject], dtype=np.uint64),
        split=np.asarray([SPLITS.index(s) for s in split or ["train"] * n], dtype=np.int8),
        label=np.asarray(label or [0] * n, dtype=np.int8),
        phash=np.asarray(phash, dtype=np.int64),
        digest=np.asarray([d.encode() for d in digest], dtype="S16"),
        content=np.asarray([c.encode() for c in content or [f"file{i}" for i in range(n)]], dtype="S16"),
        source_names=("s",),
    )


def test_groups_and_the_policy(ck_faces):
    faces = {
        i: f
        for i, f in enumerate(
            [
                ck_faces[0],
                ck_faces[0],
                ck_faces[1],
                cv2.imdecode(cv2.imencode(".jpg", ck_faces[1], [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0),
                ck_faces[2],
                ck_faces[2],
                ck_faces[3],
                ck_faces[3],
            ]
        )
    }
    hashes = perceptual_hash(np.stack(list(faces.values())))
    rows = _rows(
        phash=hashes,
        digest=["a", "a", "b", "c", "e", "f", "g", "h"],
        split=["train", "test", "train", "train", "val", "val", "train", "train"],
        label=[0, 0, 1, 2, 3, 3, 4, 4],
        subject=["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p6"],  # r6 and r7: one subject's two takes
    )
    policy = DuplicateParams()
    labels = group_labels(rows, policy, lambda wanted: {i: faces[i] for i in wanted})
    assert labels[0] == labels[1] >= 0 and labels[2] == labels[3] >= 0 and labels[4] == labels[5] >= 0
    assert labels[6] == labels[7] == -1  # same subject, near but not identical: distinct takes
    groups = summarize_groups(rows, labels)
    removed = decide(rows, groups, policy)
    assert removed[0][0] == QuarantineReason.DUPLICATE_ACROSS_SPLITS and 1 not in removed  # test wins
    assert removed[2][0] == removed[3][0] == QuarantineReason.DUPLICATE_LABEL_CONFLICT
    assert removed[5][0] == QuarantineReason.DUPLICATE and 4 not in removed  # the first in row order stays
    keep_all = decide(rows, groups, policy.replace(label_conflicts="keep", keep_one_within_split=False))
    assert set(keep_all) == {0}
    train_first = decide(rows, groups, policy.replace(split_priority=("train", "val", "test")))
    assert train_first[1][0] == QuarantineReason.DUPLICATE_ACROSS_SPLITS and 0 not in train_first


def test_exact_copies_of_one_subject_are_linked():
    rows = _rows(phash=[5, 5], digest=["x", "x"], subject=["p1", "p1"])
    labels = group_labels(rows, DuplicateParams(), lambda wanted: {})
    assert labels.tolist() == [0, 0]
    assert candidate_pairs(rows, 6).shape == (0, 2)  # no near candidates within a subject


def test_a_copy_held_by_another_subject_links_that_subjects_takes(ck_faces):
    """r0 and r2 are two takes of one subject (not copies of each other); r1 is r0's identical copy filed under
    another subject, so r1 and r2 are near copies of different people: all three form one group, and the check
    on the written rows would find it too."""
    take = ck_faces[5]
    other_take = cv2.imdecode(cv2.imencode(".jpg", take, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], 0)
    faces = {0: take, 1: take, 2: other_take}
    rows = _rows(
        phash=perceptual_hash(np.stack(list(faces.values()))),
        digest=["a", "a", "b"],
        subject=["p1", "p2", "p1"],
        split=["train", "test", "train"],
    )
    labels = group_labels(rows, DuplicateParams(), lambda wanted: {i: faces[i] for i in wanted})
    assert labels.tolist() == [0, 0, 0]
    single = _rows(phash=rows.phash, digest=["a", "a", "b"], subject=["p1", "p1", "p1"])
    assert group_labels(single, DuplicateParams(), lambda wanted: {i: faces[i] for i in wanted}).tolist() == [0, 0, -1]


def test_one_raw_file_in_two_places_is_one_group():
    """The same file read by two sources is aligned differently (detected in one, passed through in the other):
    different pixels and hashes, one raw content hash, one group."""
    rows = _rows(phash=[0, 2**62 - 1], digest=["x", "y"], subject=["p1", "p2"], content=["same", "same"])
    labels = group_labels(rows, DuplicateParams(), lambda wanted: {})
    assert labels.tolist() == [0, 0]
    assert summarize_groups(rows, labels)[0].exact
