"""Benchmark: FER2013's train zip to validated EmotionSet shards, and how memory grows with the data.

    python bench/bench_prepare.py                 # 1x and 10x the 28,709 train images, 2 cores
    python bench/bench_prepare.py --scales 1      # only the real zip

Each scale runs in a fresh process pinned to ``--cores`` CPUs: stage (read the zip, pass-through faces, SVD),
assemble the shard set, run every Great Expectations suite. ``--scales 10`` builds a zip holding every member
ten times under new names (same pixels), so the pipeline reads ten times the data; the audit then quarantines the
nine extra copies of each face as duplicates, so the shards hold the 1x rows and the quarantine table the rest.
Prints one line per scale (``rows= seconds= images_per_s= peak_rss_mb=``) and the memory ratio. Target:
1x under 60 s on 2 cores; the pipeline streams, so 10x must not need anywhere near 10x the memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"


def build_scaled_zip(source_zip: Path, target: Path, scale: int) -> Path:
    if scale == 1:
        target.symlink_to(source_zip)
        return target
    with zipfile.ZipFile(source_zip) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.is_dir():
                continue
            data = src.read(info)
            stem, dot, ext = info.filename.rpartition(".")
            for copy in range(scale):
                dst.writestr(f"{stem}c{copy}.{ext}" if copy else info.filename, data)
    return target


def run_one(raw_root: str, home: str, cores: int) -> None:
    """Child process: the measured work."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    sys.path.insert(0, str(PROJECT_ROOT))
    from pipelines.params import load_params
    from pipelines.prepare import prepare
    from pipelines.validation import validate_shard_set

    data = load_params().data.replace(raw_root=raw_root, sources=("fer2013",))
    started = time.perf_counter()
    shard_set = prepare(data, Path(home))
    prepared = time.perf_counter()
    outcomes = validate_shard_set(shard_set.path, shard_set.manifest)
    done = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": shard_set.manifest["rows"],
                "prepare_s": round(prepared - started, 2),
                "validate_s": round(done - prepared, 2),
                "seconds": round(done - started, 2),
                "valid": all(o.success for o in outcomes.values()),
                "peak_rss_mb": round(peak_kb / 1024, 1),
            }
        )
    )


def run_scaled(script: str, datasets: str, scales: str, cores: int) -> dict[int, dict]:
    """For each scale, FER2013's train zip that many times over in a temporary raw root, measured by ``script``
    run as ``script --cores N --child RAW_ROOT HOME`` (its last stdout line: a JSON object)."""
    source_zip = Path(datasets) / "fer2013" / "fer2013-train.zip"
    results = {}
    for scale in [int(s) for s in scales.split(",")]:
        with tempfile.TemporaryDirectory(prefix=f"bench-{Path(script).stem}-{scale}x-") as tmp:
            raw = Path(tmp) / "raw" / "fer2013"
            raw.mkdir(parents=True)
            build_scaled_zip(source_zip, raw / "fer2013-train.zip", scale)
            child = subprocess.run(
                [sys.executable, script, "--cores", str(cores), "--child", str(raw.parent), str(Path(tmp) / "home")],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": str(cores)},
            )
            results[scale] = json.loads(child.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=os.environ.get("EMOFLOW_DATASETS", str(DEFAULT_DATASETS)))
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child[0], args.child[1], args.cores)
        return

    results = run_scaled(__file__, args.datasets, args.scales, args.cores)
    for scale, result in results.items():
        print(
            f"scale={scale}x rows={result['rows']} seconds={result['seconds']} (prepare {result['prepare_s']}, "
            f"validate {result['validate_s']}) images_per_s={result['rows'] / result['seconds']:.0f} "
            f"valid={result['valid']} peak_rss_mb={result['peak_rss_mb']} cores={args.cores}",
            flush=True,
        )
    if 1 in results and len(results) > 1:
        for scale, result in results.items():
            if scale != 1:
                ratio = result["peak_rss_mb"] / results[1]["peak_rss_mb"]
                print(f"memory_ratio_{scale}x_vs_1x={ratio:.2f} (data ratio {scale})")


if __name__ == "__main__":
    main()
