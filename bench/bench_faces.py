"""Benchmark the faces stage: JAFFE's 213 raw images through detection and alignment.

    python bench/bench_faces.py [--datasets DIR] [--repeats 5] [--size 48] [--threads N] [--no-baseline]

Images are decoded once before timing (decoding is the readers' cost, printed separately); each repeat
runs ``FaceAligner.process`` over all 213 records (MTCNN batched + alignment + gray + resize, default
FaceParams). The machine may be shared, so the figure is the median of the repeats. The baseline is
facenet-pytorch's MTCNN with its defaults, one image at a time (``MTCNN().detect(pil_rgb_image)``), which
detects only. Peak memory is the process's peak resident set size (``ru_maxrss``), printed after our
stage and again after the baseline.

Prints ``images_per_s=<float>`` (the median), ``baseline_images_per_s=<float>`` and ``peak_rss_mib=<float>``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, from /proc/stat (0, 0 where there is none)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_mib() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=os.environ.get("EMOFLOW_DATASETS", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=48, help="output side (48 or 64)")
    ap.add_argument("--batch-size", type=int, default=None, help="FaceParams.batch_size (default: params default)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="MTCNN worker threads on CPU (default: one per CPU, at most 8; 1 = torch's own threading only)",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-by-one facenet MTCNN baseline")
    ap.add_argument("--baseline-repeats", type=int, default=1)
    args = ap.parse_args(argv)

    import cv2  # noqa: F401  (imported here so the memory figures below separate libraries from work)
    import facenet_pytorch  # noqa: F401
    import torch
    import torchvision  # noqa: F401
    from PIL import Image

    from pipelines.faces import FaceAligner, as_array
    from pipelines.params import FaceParams
    from pipelines.records import FaceRecord, RawRecord

    rss_libs = rss_mib()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.datasets) / "jaffe" / "jaffe"
    paths = sorted(folder.glob("*.tiff"))
    if len(paths) != 213:
        print(f"expected 213 JAFFE images in {folder}, found {len(paths)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    records = [
        RawRecord(
            source="jaffe",
            subject=p.name.split(".")[0],
            source_label=None,
            image=as_array(Image.open(p)),
            raw_path=p.name,
            content_hash="",
        )
        for p in paths
    ]
    decode_s = time.perf_counter() - t0
    params = FaceParams(device=args.device)
    if args.batch_size is not None:
        params = FaceParams(device=args.device, batch_size=args.batch_size)
    aligner = FaceAligner(params, (args.size, args.size), workers=args.workers)
    t0 = time.perf_counter()
    list(aligner.process(records[: params.batch_size]))  # load the networks, warm up
    warm_s = time.perf_counter() - t0

    rates, cpu_rates, others = [], [], []
    faces = 0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for _ in range(args.repeats):
        (b0, _), t0, c0 = cpu_jiffies(), time.perf_counter(), time.process_time()
        out = list(aligner.process(records))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        b1, _ = cpu_jiffies()
        rates.append(len(records) / wall)
        cpu_rates.append(len(records) / max(cpu, 1e-9))
        # CPUs' worth of work done by other processes during the run (0 = we had the machine alone)
        others.append(max((b1 - b0) / tick - cpu, 0.0) / wall)
        faces = sum(isinstance(o, FaceRecord) for o in out)
    median = statistics.median(rates)
    mtcnn_det = aligner.detector("mtcnn")
    device = mtcnn_det.device
    print(
        f"device={device} torch_threads={torch.get_num_threads()} mtcnn_workers={mtcnn_det.workers} "
        f"cpus={os.cpu_count()} batch_size={params.batch_size} size={args.size} "
        f"min_face_fraction={mtcnn_det.min_face_fraction} max_detect_side={mtcnn_det.max_detect_side}"
    )
    print(f"images={len(records)} faces={faces} quarantined={len(records) - faces}")
    print(f"decode_s={decode_s:.3f} warmup_s={warm_s:.3f}")
    print(f"runs_images_per_s={[round(r, 1) for r in rates]}")
    # Images per CPU-second of this process: less sensitive to other processes on a shared machine
    # (wall-clock throughput collapses when torch's threads are descheduled; CPU time mostly does not).
    print(f"runs_images_per_cpu_s={[round(r, 1) for r in cpu_rates]}")
    print(f"runs_other_processes_cpus={[round(o, 2) for o in others]}")
    print(f"images_per_s={median:.1f}")
    print(f"rss_after_imports_mib={rss_libs:.1f} (torch+torchvision+facenet+cv2 loaded, nothing run)")
    print(f"peak_rss_mib={peak_rss_mib():.1f}")

    if not args.no_baseline:
        from facenet_pytorch import MTCNN

        mtcnn = MTCNN(device="cpu" if device == "cpu" else device)
        pil = [Image.fromarray(r.image).convert("RGB") for r in records]
        mtcnn.detect(pil[0])
        base_rates = []
        found = 0
        for _ in range(args.baseline_repeats):
            t0 = time.perf_counter()
            found = 0
            for im in pil:
                boxes, _ = mtcnn.detect(im)
                found += boxes is not None
            base_rates.append(len(pil) / (time.perf_counter() - t0))
        print(f"baseline=facenet MTCNN() defaults, one image per call, detection only: faces={found}")
        print(f"baseline_runs_images_per_s={[round(r, 1) for r in base_rates]}")
        print(f"baseline_images_per_s={statistics.median(base_rates):.1f}")
        print(f"speedup={median / statistics.median(base_rates):.2f}x")
        print(f"peak_rss_mib_after_baseline={peak_rss_mib():.1f}")
    return 0 if faces == len(records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
