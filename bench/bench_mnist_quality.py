"""Quality for comparison across commits: the MNIST test bits/dim a fixed wall-clock training budget reaches.

    python bench/bench_mnist_quality.py                       # 10 minutes, bplf_3x3_svd and glow, CPU
    python bench/bench_mnist_quality.py --variant glow --minutes 10 --device cuda --hidden 512 --steps 32

The run goes through the same code as the training asset (``flowmodels.training.train`` with a ``max_seconds``
budget, the MNIST loader of the ``mnist`` partition: 28x28 digits zero-padded to 32x32, the last 5,000 training
digits held out for validation) and scores the whole 10,000-digit test split with fixed dequantisation noise.
Prints ``test_bpd=<float>`` (standard convention; the BPLF paper's equation 4-1 form beside it), steps, images/s.
Bits/dim are at 32x32: the padding is cheap to model, so they are not comparable with 28x28 figures.

Reference points (``../shared/docs/flows.md``, the BPLF paper's Table 3): BPLF 3x3 with SVD 1.13 bits/dim,
Glow 1.05, both after GPU-days of training; a CPU budget of minutes lands well above them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_flow_throughput.py

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowmodels.data import load_mnist_partition  # noqa: E402
from flowmodels.evaluation import test_bits_per_dim  # noqa: E402
from flowmodels.training import TrainConfig, build_seeded_model, train  # noqa: E402


def run(args, variant: str) -> dict:
    root = Path(args.mnist)
    column = "pixels_svd" if variant.endswith("_svd") else "pixels"
    train_set, val_set, test_set = (
        load_mnist_partition(root, s, pad_to=32, column=column) for s in ("train", "val", "test")
    )
    model = build_seeded_model(
        args.seed, variant, (1, 32, 32), None, levels=args.levels, steps=args.steps, hidden=args.hidden, n_bits=8
    )
    config = TrainConfig(
        optimizer="adamax",
        lr=args.lr,
        warmup_steps=args.warmup,
        batch_size=args.batch,
        max_steps=None,
        max_seconds=args.minutes * 60,
        checkpoint_every=0,
        val_every=0,
        log_every=50,
        seed=args.seed,
        device=args.device,
    )
    with tempfile.TemporaryDirectory() as checkpoints:
        started = time.monotonic()
        result = train(model, train_set, val_set, config, Path(checkpoints), progress_bar=args.progress)
        trained_s = time.monotonic() - started
    standard, bplf = test_bits_per_dim(model, test_set, batch_size=256, seed=0)
    return {
        "variant": variant,
        "test_bpd": standard,
        "test_bpd_eq41": bplf,
        "val_bpd": result.val_bpd,
        "steps": result.steps,
        "images_per_s": result.images_per_s,
        "train_s": trained_s,
        "device": result.device,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", default=["bplf_3x3_svd", "glow"])
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per variant")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="K, steps per level")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--progress", action="store_true", help="tqdm bar on stderr")
    p.add_argument(
        "--mnist", default=os.environ.get("EMOFLOW_DATASETS", str(ROOT.parent / "shared" / "datasets")) + "/mnist"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# MNIST 32x32, L={args.levels} K={args.steps} hidden={args.hidden} batch={args.batch} lr={args.lr} "
        f"budget={args.minutes:g} min per variant, unconditional, torch_threads={torch.get_num_threads()}, "
        f"cpus={os.cpu_count()}"
    )
    for variant in args.variant:
        r = run(args, variant)
        print(
            f"test_bpd={r['test_bpd']:.4f} variant={r['variant']} test_bpd_eq41={r['test_bpd_eq41']:.4f} "
            f"val_bpd={r['val_bpd']:.4f} steps={r['steps']} images_per_s={r['images_per_s']:.1f} "
            f"train_s={r['train_s']:.0f} device={r['device']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
