"""Duplicate groups over a shard set, and the policy that decides which members stay.

Two faces are linked when their aligned pixels are identical or they come from byte-identical files (exact), or
when they are near copies:

1. candidates: perceptual hashes within ``near_distance`` bits (``pipelines.audit.hashing``), between faces that
   are not of the same (source, subject). A subject's own images in a posed dataset (JAFFE, CK+, MMI: one person,
   one lighting, one alignment, consecutive frames) are distinct takes that no face hash tells from copies
   (measured: README "Data audit"); subject-independent splits keep them in one split, so they cannot leak;
2. verified: the faces, standardised (zero mean, unit variance) and blurred (sigma 1 px), are compared at the best
   shift within a few pixels, on a 4x4 grid of cells; the pair is a copy when its worst cell's mean absolute
   difference is at most ``max_cell_error``. Copies (re-encoded, re-cropped, watermarked) agree in every cell;
   different people whose hashes collide (frequent among aligned frontal faces) differ in some.

Duplicate groups are the connected components of those links (a chain of copies is one group).

Candidate pairs are found without comparing all N^2 pairs (multi-index hashing): the 63 hash bits are cut into
``near_distance + 1`` blocks, and two hashes within ``near_distance`` bits agree exactly on at least one block
(pigeonhole), so only hashes sharing a block value are compared.

The policy (``DuplicateParams``), applied to each group in this order, deterministic (members ordered by id):

1. labels disagree (and ``label_conflicts: quarantine``): every member -> ``duplicate_label_conflict``;
2. members in several splits: those outside the first split of ``split_priority`` present in the group ->
   ``duplicate_across_splits`` (default priority test > val > train: FER2013's published test stays intact);
3. several members left (and ``keep_one_within_split``): the first in row order stays, the others -> ``duplicate``.

Rows are addressed by their position in a fixed row order (the staged sources in name order, each in reader order;
or a shard set's files in order), and ``AuditRows`` holds numbers only, ~51 bytes a row, so the audit's memory is a
small fraction of the faces' even at many times FER2013's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.audit.hashing import HASH_BITS, hamming
from pipelines.params_types import SPLITS
from pipelines.records import QuarantineReason

VERIFY_CHUNK = 2048  # rows of a large bucket compared at once (memory: chunk x bucket distances)


@dataclass(frozen=True)
class AuditRows:
    """What the duplicate audit knows of each row, as numpy arrays of equal length (no strings)."""

    source: np.ndarray  # int8: index into source_names
    subject: np.ndarray  # uint64: a hash of (source, subject), equal exactly for one subject of one source
    split: np.ndarray  # int8: index into SPLITS
    label: np.ndarray  # int8: 0..6
    phash: np.ndarray  # int64: perceptual hash
    digest: np.ndarray  # S16: digest of the pixel bytes
    content: np.ndarray  # S16: the first 16 bytes of the raw file's sha256 (the shards' content_hash)
    source_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.phash)


def _blocks(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 near-equal bit blocks covering the hash's bits."""
    count = min(max_distance + 1, HASH_BITS)
    edges = np.linspace(0, HASH_BITS, count + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Every pair (i, j), i < j, of hashes within ``max_distance`` bits, as an (M, 2) int64 array, sorted."""
    hashes = np.asarray(hashes, dtype=np.int64)
    found: list[np.ndarray] = []
    n = len(hashes)
    for shift, width in _blocks(max_distance):
        key = (hashes >> shift) & ((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        cuts = np.flatnonzero(np.diff(sorted_key)) + 1
        for start, end in zip(np.r_[0, cuts], np.r_[cuts, n]):
            if end - start < 2:
                continue
            members = order[start:end]
            for lo in range(0, len(members), VERIFY_CHUNK):
                rows = members[lo : lo + VERIFY_CHUNK]
                close = hamming(hashes[rows][:, None], hashes[members][None, :]) <= max_distance
                i, j = np.nonzero(close)
                a, b = rows[i], members[j]
                keep = a < b
                if keep.any():
                    found.append(np.stack([a[keep], b[keep]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def first_copies(digests: np.ndarray) -> np.ndarray:
    """Per row, the index of the first row with the same digest."""
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def exact_pairs(digests: np.ndarray) -> np.ndarray:
    """Pairs linking each row to the first row with the same digest, (M, 2) int64."""
    anchor = first_copies(digests)
    rows = np.flatnonzero(anchor != np.arange(len(digests)))
    return np.stack([anchor[rows], rows], axis=1).astype(np.int64)


CELLS = 4  # verification grid: CELLS x CELLS cells over the face
VERIFY_PAIRS = 256  # pairs verified at once


def candidate_pairs(rows: AuditRows, near_distance: int) -> np.ndarray:
    """Near-hash pairs between distinct faces not all of one (source, subject): (M, 2) int64 row indices.

    The search runs over the first row of each set of identical copies only (a face held k times is one entry,
    not k); a pair of such rows is dropped when every copy of both belongs to the same subject."""
    representative = first_copies(rows.digest)
    distinct = np.unique(representative)
    pairs = near_pairs(rows.phash[distinct], near_distance)
    if not len(pairs):
        return pairs
    pairs = distinct[pairs]
    # the subject of each set of identical copies, or "mixed" when its copies belong to several subjects
    set_subjects = np.unique(np.stack([representative, rows.subject.astype(np.int64)], axis=1), axis=0)
    mixed = np.zeros(len(rows), dtype=bool)
    mixed[set_subjects[np.bincount(set_subjects[:, 0], minlength=len(rows))[set_subjects[:, 0]] > 1, 0]] = True
    a, b = pairs[:, 0], pairs[:, 1]
    one_subject = ~mixed[a] & ~mixed[b] & (rows.subject[a] == rows.subject[b])
    return pairs[~one_subject]


def _standardised(faces: np.ndarray) -> np.ndarray:
    import cv2

    out = np.empty(faces.shape, dtype=np.float32)
    for i, face in enumerate(faces):
        f = face.astype(np.float32)
        f = (f - f.mean()) / (f.std() + 1e-6)
        out[i] = cv2.GaussianBlur(f, (0, 0), 1.0)
    return out


def cell_errors(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per pair of uint8 faces (P, H, W): the worst cell's mean absolute difference of the standardised,
    blurred faces at the best shift of ``first`` within +-radius pixels (radius 2 at 48 px, scaled with size)."""
    p, h, w = first.shape
    radius = max(1, round(2 * h / 48))
    a, b = _standardised(first), _standardised(second)
    core = b[:, radius : h - radius, radius : w - radius]
    ch, cw = core.shape[1] // CELLS, core.shape[2] // CELLS
    best = np.full(p, np.inf, dtype=np.float32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            moved = a[:, radius + dy : h - radius + dy, radius + dx : w - radius + dx]
            error = np.abs(moved - core)[:, : ch * CELLS, : cw * CELLS]
            cells = error.reshape(p, CELLS, ch, CELLS, cw).mean(axis=(2, 4))
            best = np.minimum(best, cells.reshape(p, -1).max(axis=1))
    return best


def verified_pairs(pairs: np.ndarray, faces: dict[int, np.ndarray], max_cell_error: float) -> np.ndarray:
    """The candidate pairs whose faces (``faces``: row index -> uint8 face) pass the cell comparison."""
    keep = np.zeros(len(pairs), dtype=bool)
    for lo in range(0, len(pairs), VERIFY_PAIRS):
        chunk = pairs[lo : lo + VERIFY_PAIRS]
        first = np.stack([faces[int(i)] for i in chunk[:, 0]])
        second = np.stack([faces[int(j)] for j in chunk[:, 1]])
        keep[lo : lo + len(chunk)] = cell_errors(first, second) <= max_cell_error
    return pairs[keep]


def group_labels(rows: AuditRows, policy, load_faces) -> np.ndarray:
    """A group number per row: rows in one duplicate group share it; -1 for rows without a duplicate.

    ``policy``: ``DuplicateParams``; ``load_faces(indices)``: row index -> uint8 face for those rows (called once,
    for the rows of candidate pairs only, so the faces are never all in memory)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(rows)
    # near candidates are sought and verified between distinct faces only (the first of each set of identical
    # copies): a face held k times costs one search entry and one verification, not k^2, and one copy's pixels
    near = candidate_pairs(rows, policy.near_distance)
    if len(near):
        near = verified_pairs(near, load_faces(set(near.ravel().tolist())), policy.max_cell_error)
    # identical: the same aligned pixels, or the same raw file (one file read by two sources aligns differently)
    pairs = np.concatenate([near, exact_pairs(rows.digest), exact_pairs(rows.content)])
    if not len(pairs):
        return np.full(n, -1, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    count, component = connected_components(graph, directed=False)
    grouped = np.bincount(component, minlength=count)[component] > 1
    # number groups 0.. in the order of their first row, so numbering is stable for a given row order
    first = np.full(count, n, dtype=np.int64)
    np.minimum.at(first, component, np.arange(n))
    multi = np.unique(component[grouped])
    rank = np.zeros(count, dtype=np.int64)
    rank[multi[np.argsort(first[multi])]] = np.arange(len(multi))
    labels = np.full(n, -1, dtype=np.int64)
    labels[grouped] = rank[component[grouped]]
    return labels


@dataclass(frozen=True)
class GroupSummary:
    group: int
    members: np.ndarray  # row indices, in row order
    exact: bool  # every member has identical pixels, or every member is the same raw file
    splits: tuple[str, ...]
    sources: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def cross_split(self) -> bool:
        return len(self.splits) > 1

    @property
    def cross_source(self) -> bool:
        return len(self.sources) > 1

    @property
    def label_conflict(self) -> bool:
        return len(self.labels) > 1


def summarize_groups(rows: AuditRows, labels: np.ndarray) -> list[GroupSummary]:
    grouped = np.flatnonzero(labels >= 0)
    order = grouped[np.argsort(labels[grouped], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    summaries = []
    for members in np.split(order, cuts) if len(order) else []:
        summaries.append(
            GroupSummary(
                group=int(labels[members[0]]),
                members=members,
                exact=len(set(rows.digest[members])) == 1 or len(set(rows.content[members])) == 1,
                splits=tuple(SPLITS[c] for c in sorted(set(rows.split[members].tolist()))),
                sources=tuple(sorted({rows.source_names[c] for c in rows.source[members].tolist()})),
                labels=tuple(sorted({int(v) for v in rows.label[members]})),
            )
        )
    return summaries


def decide(rows: AuditRows, groups: list[GroupSummary], policy) -> dict[int, tuple[str, str]]:
    """Row index -> (quarantine reason, detail) for every member the policy removes (see the module docstring).

    ``policy``: ``pipelines.params.DuplicateParams``."""
    removed: dict[int, tuple[str, str]] = {}
    for g in groups:
        kind = "identical pixels" if g.exact else "near copies"
        if g.label_conflict and policy.label_conflicts == "quarantine":
            detail = f"duplicate group {g.group} ({kind}; {len(g.members)} faces) has labels {list(g.labels)}"
            for m in g.members:
                removed[int(m)] = (QuarantineReason.DUPLICATE_LABEL_CONFLICT, detail)
            continue
        left = list(g.members)
        if g.cross_split:
            winner = next(s for s in policy.split_priority if s in g.splits)
            detail = f"duplicate group {g.group} ({kind}) spans splits {list(g.splits)}: kept in {winner} only"
            for m in g.members:
                if SPLITS[rows.split[m]] != winner:
                    removed[int(m)] = (QuarantineReason.DUPLICATE_ACROSS_SPLITS, detail)
            left = [m for m in g.members if SPLITS[rows.split[m]] == winner]
        if len(left) > 1 and policy.keep_one_within_split:
            detail = f"duplicate group {g.group} ({kind}): another copy is kept in {SPLITS[rows.split[left[0]]]}"
            for m in left[1:]:
                removed[int(m)] = (QuarantineReason.DUPLICATE, detail)
    return removed
