"""Benchmark: what the data audit adds to `emoflow prepare`, how its memory grows, and the measurement behind
its two thresholds.

    python bench/bench_audit.py                  # speed and memory: FER2013's train zip at 1x and 4x, 2 cores
    python bench/bench_audit.py --threshold      # the near-copy thresholds, measured on real faces

Speed (target: the audit adds at most 10 s to `emoflow prepare` over the 28,709 train faces on 2 cores). The audit
is timed part by part in a child process pinned to ``--cores`` CPUs: screening (gray spread) and perceptual hashing
over the decoded faces (what staging does more), the assembly's audit (second read of the staged rows' small
columns, candidate search, verification of candidate pairs, grouping, decisions), and the groups file and picture.
``--scales 4`` builds a zip holding every member four times (identical pixels): the worst case for grouping, every
face in a group of at least four. Memory: the audit's peak traced allocation (tracemalloc: Python and numpy), in
all and per row, against the 2 x 2,304 pixel bytes a 48x48 row holds: the audit keeps ~51 bytes of numbers a row,
the faces of candidate pairs only (a few percent of the rows) and one batch at a time.

Thresholds: re-encoded copies of FER2013 faces (JPEG q30/q75, resizing, blur) against random pairs of different
faces, in perceptual-hash bits; then the verification's worst-cell error over the candidate pairs of FER2013 and of
JAFFE + CK+48 (same subject, different subjects), which is what chose ``max_cell_error``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
sys.path.insert(0, str(PROJECT_ROOT / "bench"))
DEFAULT_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


def fer_faces(datasets: Path) -> np.ndarray:
    import cv2

    with zipfile.ZipFile(datasets / "fer2013" / "fer2013-train.zip") as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith(".jpg"))
        return np.stack([cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_GRAYSCALE) for n in names])


def run_child(raw_root: str, home: str, cores: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    from pipelines.assembly import _audit, _splits_for, assemble_emotionset
    from pipelines.audit.hashing import perceptual_hash
    from pipelines.audit.pictures import duplicate_groups_png
    from pipelines.audit.screening import gray_spread
    from pipelines.params import load_params
    from pipelines.prepare import stage_source
    from pipelines.shards import decode_pixels

    data = load_params().data.replace(raw_root=raw_root, sources=("fer2013",))
    started = time.perf_counter()
    staged = stage_source("fer2013", data, Path(home))
    stage_s = time.perf_counter() - started

    import pyarrow.parquet as pq

    table = pq.read_table(staged.rows_file, columns=["pixels"])
    faces = decode_pixels(table.column("pixels"), *data.image_size)
    started = time.perf_counter()
    for face in faces:
        gray_spread(face)
    hashes = [perceptual_hash(faces[i : i + 256]) for i in range(0, len(faces), 256)]
    screen_hash_s = time.perf_counter() - started
    del table, faces, hashes

    maps = {"fer2013": _splits_for(staged, data)}
    tracemalloc.start()
    started = time.perf_counter()
    audit = _audit([staged], maps, data)
    audit_s = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        audit.write_groups(Path(tmp) / "groups.parquet", "zstd")
    duplicate_groups_png(audit, {}, tuple(data.image_size))
    groups_s = time.perf_counter() - started
    started = time.perf_counter()
    shard_set = assemble_emotionset([staged], data, Path(home) / "shards")
    assemble_s = time.perf_counter() - started
    a = shard_set.manifest["audit"]
    print(
        json.dumps(
            {
                "rows": len(audit.rows),
                "stage_s": round(stage_s, 2),
                "screen_hash_s": round(screen_hash_s, 3),
                "audit_s": round(audit_s, 3),
                "groups_png_s": round(groups_s, 3),
                "assemble_s": round(assemble_s, 2),
                "audit_peak_mb": round(peak / 2**20, 1),
                "groups": a["duplicate_groups"],
                "cross_split": a["cross_split_groups"],
                "label_conflict": a["label_conflict_groups"],
                "blank": a["blank"],
            }
        )
    )


def speed(args) -> None:
    from bench_prepare import run_scaled

    results = run_scaled(__file__, args.datasets, args.scales, args.cores)
    for scale, r in results.items():
        added = r["screen_hash_s"] + r["audit_s"] + r["groups_png_s"]
        print(
            f"FIGURE audit scale={scale}x rows={r['rows']} audit_added_s={added:.2f} (screen+hash "
            f"{r['screen_hash_s']}, assembly audit {r['audit_s']}, groups+png {r['groups_png_s']}) "
            f"stage_s={r['stage_s']} assemble_s={r['assemble_s']} audit_peak_mb={r['audit_peak_mb']} "
            f"bytes_per_row={r['audit_peak_mb'] * 2**20 / r['rows']:.0f} groups={r['groups']} "
            f"cross_split={r['cross_split']} label_conflict={r['label_conflict']} blank={r['blank']} "
            f"cores={args.cores} target: audit_added_s <= 10 at 1x",
            flush=True,
        )
    if 1 in results:
        for scale in results:
            if scale != 1:
                per_row = [results[s]["audit_peak_mb"] / results[s]["rows"] for s in (1, scale)]
                print(f"FIGURE audit memory_per_row_ratio_{scale}x_vs_1x={per_row[1] / per_row[0]:.2f} (flat: ~1)")


def thresholds(args) -> None:
    import cv2

    from pipelines.audit.duplicates import cell_errors, near_pairs
    from pipelines.audit.hashing import hamming, perceptual_hash
    from pipelines.params import DuplicateParams

    policy = DuplicateParams()
    faces = fer_faces(Path(args.datasets))
    hashes = np.concatenate([perceptual_hash(faces[i : i + 256]) for i in range(0, len(faces), 256)])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(faces), 2000, replace=False)
    recode = {
        "jpeg_q30": lambda x: cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 30])[1], 0),
        "jpeg_q75": lambda x: cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], 0),
        "resize_40": lambda x: cv2.resize(cv2.resize(x, (40, 40), interpolation=cv2.INTER_AREA), (48, 48)),
        "blur_3": lambda x: cv2.GaussianBlur(x, (3, 3), 0),
    }
    for name, f in recode.items():
        copies = np.stack([f(faces[k]) for k in pick])
        d = hamming(hashes[pick], perceptual_hash(copies))
        e = cell_errors(faces[pick], copies)
        print(
            f"FIGURE threshold fer2013 copies={name} bits p50={np.median(d):.0f} p99={np.percentile(d, 99):.0f} "
            f"max={d.max()} cell_error p99={np.percentile(e, 99):.3f} (n=2000)"
        )
    i, j = rng.integers(0, len(faces), 200_000), rng.integers(0, len(faces), 200_000)
    d = hamming(hashes[i[i != j]], hashes[j[i != j]])
    print(
        f"FIGURE threshold fer2013 random_pairs bits p0.01={np.percentile(d, 0.01):.0f} p1={np.percentile(d, 1):.0f} "
        f"share_within_{policy.near_distance}={np.mean(d <= policy.near_distance):.2e} (n={len(d)})"
    )
    pairs = near_pairs(hashes, policy.near_distance)
    exact = (faces[pairs[:, 0]] == faces[pairs[:, 1]]).all(axis=(1, 2))
    e = cell_errors(faces[pairs[~exact, 0]], faces[pairs[~exact, 1]])
    shares = " ".join(f"<={t}:{np.mean(e <= t):.2f}" for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.6))
    print(
        f"FIGURE threshold fer2013 candidates={len(pairs)} identical={int(exact.sum())} near cell_error shares {shares} "
        "(looked at: pairs below 0.35 are copies, above 0.6 mostly different people)"
    )
    lab_pairs(Path(args.datasets), policy)


def lab_pairs(datasets: Path, policy) -> None:
    """Candidate pairs among JAFFE + CK+48's aligned faces, by whether they share a subject."""
    from pipelines.audit.duplicates import cell_errors, near_pairs
    from pipelines.audit.hashing import perceptual_hash
    from pipelines.params import load_params
    from pipelines.prepare import prepare
    from pipelines.shards import decode_pixels, read_shards

    with tempfile.TemporaryDirectory(prefix="bench-audit-lab-") as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        (raw / "jaffe").symlink_to(datasets / "jaffe")
        (raw / "ckplus").symlink_to(datasets / "ckplus48")
        data = load_params().data.replace(raw_root=str(raw), sources=("jaffe", "ckplus"))
        shard_set = prepare(data, Path(tmp) / "home")
        t = read_shards(shard_set.path, columns=["source", "subject", "label", "pixels"])
    faces = decode_pixels(t.column("pixels"), 48, 48)
    source, subject = np.asarray(t.column("source").to_pylist()), np.asarray(t.column("subject").to_pylist())
    label = np.asarray(t.column("label").to_pylist())
    pairs = near_pairs(perceptual_hash(faces), policy.near_distance)
    a, b = pairs[:, 0], pairs[:, 1]
    same = (source[a] == source[b]) & (subject[a] == subject[b])
    e = cell_errors(faces[a], faces[b])
    for name, mask in (
        ("same_subject_other_label", same & (label[a] != label[b])),
        ("same_subject_same_label", same & (label[a] == label[b])),
        ("different_subjects", ~same),
    ):
        if mask.any():
            print(
                f"FIGURE threshold jaffe+ckplus48 candidates={name} n={int(mask.sum())} cell_error "
                f"min={e[mask].min():.3f} p5={np.percentile(e[mask], 5):.3f} p50={np.median(e[mask]):.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=os.environ.get("EMOFLOW_DATASETS", str(DEFAULT_DATASETS)))
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--threshold", action="store_true", help="measure the near-copy thresholds instead")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], args.child[1], args.cores)
    elif args.threshold:
        thresholds(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
