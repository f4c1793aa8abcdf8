"""Subject-independent, seeded train/val/test splits and k-fold assignment.

Subjects, not images, are assigned: every image of a subject lands in the same split and the same fold, so a
model is never evaluated on a person it was trained on. Subjects are scoped by source (JAFFE's "KA" and a
CK+ "S005" are different people); each source is split on its own so every source contributes to every split in
the given ratios. A source with its own split (FER2013's Usage) keeps it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from pipelines.params import SPLITS


def _rng(seed: int, *scope: str) -> np.random.Generator:
    digest = hashlib.sha256("|".join([str(seed), *scope]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def split_counts(n: int, ratios: Mapping[str, float]) -> dict[str, int]:
    """How many of n subjects go to each split: largest remainders, and every split with a positive ratio gets
    at least one subject whenever there are enough subjects for all of them."""
    exact = {s: n * ratios[s] for s in SPLITS}
    counts = {s: int(np.floor(v)) for s, v in exact.items()}
    for s in sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s))):
        if sum(counts.values()) >= n:
            break
        counts[s] += 1
    wanted = [s for s in SPLITS if ratios[s] > 0]
    if n >= len(wanted):
        for s in wanted:
            if counts[s] == 0:
                donor = max(wanted, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[s] += 1
    return counts


def assign_subject_splits(
    source: str, subjects: Iterable[str], ratios: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Map each subject of one source to a split, deterministically from the seed."""
    ordered = sorted(set(subjects))
    order = _rng(seed, "split", source).permutation(len(ordered))
    counts = split_counts(len(ordered), ratios)
    assignment: dict[str, str] = {}
    position = 0
    for split in SPLITS:
        for index in order[position : position + counts[split]]:
            assignment[ordered[index]] = split
        position += counts[split]
    return assignment


def assign_subject_folds(source: str, subjects: Iterable[str], folds: int, seed: int) -> dict[str, int]:
    """Map each subject of one source to a fold 0..folds-1 (balanced by subject count), deterministically."""
    ordered = sorted(set(subjects))
    order = _rng(seed, "fold", source).permutation(len(ordered))
    return {ordered[index]: rank % folds for rank, index in enumerate(order)}
