"""Quality per minute: the MNIST test bits/dim a fixed wall-clock training budget reaches, optionally beside
rosinality's glow-pytorch trained in the same budget on the same machine and data.

    python bench/bench_mnist_quality.py                       # 10 minutes, bplf_3x3_svd and glow, CPU
    python bench/bench_mnist_quality.py --reference /tmp/glow-pytorch/model.py --minutes 3
    python bench/bench_mnist_quality.py --variant glow --minutes 10 --device cuda --hidden 512 --steps 32

The run goes through the same code as the training asset (``flowmodels.training.train`` with a ``max_seconds``
budget, the MNIST loader of the ``mnist`` partition: 28x28 digits zero-padded to 32x32, the last 5,000 training
digits held out for validation) and scores the whole 10,000-digit test split with fixed dequantisation noise.
Prints one ``test_bpd=<float> ...`` line per model (standard convention at 8 bits; the BPLF paper's equation 4-1
form beside it), steps, images/s. Bits/dim are at 32x32: the padding is cheap to model, so they are not
comparable with 28x28 figures. ``test_bpd`` of an ``_svd`` variant is on SVD-truncated test digits, as the paper
scores it (the settings' default truncation, rank 16); ``test_bpd_raw`` is every model's figure on the raw test
digits, the column models are compared by.

``--reference PATH`` is a local copy of rosinality's ``model.py`` (never committed here; imported by path). Its
``Glow(in_channel=1, n_flow=K, n_block=L, affine=True, conv_lu=True)`` is built for the 1-channel digits at the
same L, K and conditioner width as ours (each ``Flow``'s coupling is its own ``AffineCoupling`` rebuilt with
``filter_size=--hidden``: its ``Glow`` fixes 512) and trained through the same loop (``training.run_training``)
on the same raw training digits, in the same order, with the same per-step dequantisation noise and the same
budget. Its loss and bits/dim are its train.py's: -(log_p + logdet - D log n_bins) / (D log 2), with x =
pixel / 256 - 0.5 + U(0, 1) / 256 and n_bins = 256 (8 bits). The test digits and their noise are emoflow's
scoring's (``flowmodels.scoring.noisy_batches``: image i's noise from (seed, i // 256)), so both sides are scored
on identical inputs. ``--reference-recipe same`` (default) gives it our optimizer, lr, warm-up and gradient
clipping, so only the implementation differs; ``theirs`` is its train.py's: Adam, lr 1e-4, no warm-up, no clipping.

Reference points (``../shared/docs/flows.md``, the BPLF paper's Table 3): BPLF 3x3 with SVD 1.13 bits/dim,
Glow 1.05, both after GPU-days of training; a CPU budget of minutes lands well above them.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_flow_throughput.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowmodels.data import ImageSet, load_mnist_partition  # noqa: E402
from flowmodels.scoring import noisy_batches, test_bits_per_dim  # noqa: E402
from flowmodels.training import build_seeded_model, train  # noqa: E402
from pipelines.params import SvdParams, TrainParams  # noqa: E402
from training.checkpoints import jsonable  # noqa: E402
from training.devices import resolve_device  # noqa: E402
from training.loop import LoopConfig, StepReport, run_training  # noqa: E402
from training.schedule import WarmupSchedule, make_optimizer  # noqa: E402
from training.seeds import EpochBatches, derive_seed, generator, seeded, uniform  # noqa: E402

N_BITS = 8
REFERENCE_NAME = "rosinality_glow"
# the reference's own train.py: Adam at 1e-4, constant, no clipping (its warm-up line is commented out)
THEIR_RECIPE = {"optimizer": "adam", "lr": 1e-4, "warmup_steps": 0, "grad_clip": None}


def train_params(args, recipe: Mapping[str, Any] | None = None) -> TrainParams:
    settings = {"optimizer": "adamax", "lr": args.lr, "warmup_steps": args.warmup, **(recipe or {})}
    return TrainParams(
        **settings,
        batch_size=args.batch,
        max_steps=None,
        max_seconds=args.minutes * 60,
        checkpoint_every=0,
        val_every=0,
        log_every=50,
        seed=args.seed,
        device=args.device,
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_emoflow(args, variant: str, raw_test: ImageSet) -> dict:
    root = Path(args.mnist)
    column = "pixels_svd" if variant.endswith("_svd") else "pixels"
    train_set, val_set, test_set = (
        load_mnist_partition(root, s, pad_to=32, column=column, svd=SvdParams()) for s in ("train", "val", "test")
    )
    model = build_seeded_model(
        args.seed, variant, (1, 32, 32), None, levels=args.levels, steps=args.steps, hidden=args.hidden, n_bits=N_BITS
    )
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as checkpoints:
        started = time.monotonic()
        result = train(model, train_set, val_set, train_params(args), Path(checkpoints), progress_bar=args.progress)
        trained_s = time.monotonic() - started
    standard, bplf = test_bits_per_dim(model, test_set, batch_size=256, seed=0)
    raw = standard if column == "pixels" else test_bits_per_dim(model, raw_test, batch_size=256, seed=0)[0]
    return {
        "variant": variant,
        "test_bpd": standard,
        "test_bpd_raw": raw,
        "test_bpd_eq41": f"{bplf:.4f}",
        "val_bpd": result.val["val_bpd"],
        "steps": result.steps,
        "images_per_s": result.images_per_s,
        "train_s": trained_s,
        "params": parameter_count(model),
        "load1": load,
        "device": result.device,
    }


# --- rosinality's glow-pytorch -----------------------------------------------------------------------------


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("rosinality_glow_model", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--reference {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_reference(module, args) -> nn.Module:
    """Its Glow for 1-channel digits at our L, K and hidden width, initialised from the run's seed (its
    LU 1x1 convolutions draw from numpy's global RNG, its couplings from torch's)."""
    numpy_state = np.random.get_state()
    np.random.seed(derive_seed(args.seed, "reference-model") % 2**32)
    try:
        with seeded(derive_seed(args.seed, "reference-model")), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # its torch.from_numpy
            model = module.Glow(1, args.steps, args.levels, affine=True, conv_lu=True)
            for m in model.modules():
                if isinstance(m, module.Flow):
                    channels = m.actnorm.loc.shape[1]
                    m.coupling = module.AffineCoupling(channels, filter_size=args.hidden, affine=True)
    finally:
        np.random.set_state(numpy_state)
    return model


def reference_bits_per_dim(model: nn.Module, x_uint8: Tensor, noise: Tensor) -> Tensor:
    """Bits/dim per image by the reference's train.py (``calc_loss`` with D = C*H*W, not its hard-wired 3 channels)."""
    n_bins = 2.0**N_BITS
    x = (x_uint8.float() + noise.to(x_uint8.device)) / n_bins - 0.5
    log_p, logdet, _ = model(x)
    n_pixel = x[0].numel()
    return -(log_p + logdet - math.log(n_bins) * n_pixel) / (math.log(2) * n_pixel)


@torch.inference_mode()
def reference_dataset_bits_per_dim(model: nn.Module, images: ImageSet, batch_size: int, seed: int, device) -> float:
    """Mean bits/dim over a set with emoflow's evaluation noise (the same u for image i as ``test_bits_per_dim``)."""
    model.eval()
    total = 0.0
    for _, x, _, u in noisy_batches(images, batch_size, seed, device, use_labels=False):
        total += float(reference_bits_per_dim(model, x, u).double().sum())
    return total / max(len(images), 1)


class ReferenceTrainer:
    """rosinality's Glow as a ``training.Trainer``: FlowTrainer's data order, noise, actnorm initialisation
    batch, optimizer and warm-up (single process), with the reference's own loss."""

    kind = "reference_flow"

    def __init__(self, model: nn.Module, train_set: ImageSet, val_set: ImageSet, config: TrainParams):
        self.model, self.train_set, self.val_set, self.config = model, train_set, val_set, config
        self.device = resolve_device(config.device, 0)
        self.batches = EpochBatches(config.seed, len(train_set), config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        model.to(self.device).train()
        self.optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
        self.schedule = WarmupSchedule(self.optimizer, config.lr, config.warmup_steps)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_norm = config.grad_clip if config.grad_clip else math.inf

    def initialize(self) -> str:
        # its ActNorm initialises itself on the first batch it sees (its train.py: one no-grad forward);
        # it sees the images FlowTrainer initialises ours with, dequantised by noise of the same seed stream
        cfg = self.config
        idx = torch.randperm(len(self.train_set), generator=generator(cfg.seed, "init"))[: cfg.init_batch]
        x0 = self.train_set.images[idx].to(self.device)
        with torch.no_grad():
            reference_bits_per_dim(self.model, x0, uniform(cfg.seed, "init-noise", 0, tuple(x0.shape)))
        return "data"

    def train_step(self, step: int) -> StepReport:
        cfg = self.config
        x = self.train_set.images[self.batches(step)].to(self.device)
        noise = uniform(cfg.seed, "noise", step, (cfg.batch_size, *self.train_set.image_shape)).to(self.device)
        lr = self.schedule.apply(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = reference_bits_per_dim(self.model, x, noise).mean()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        value = float(loss.detach())
        if not (math.isfinite(value) and math.isfinite(float(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            detail = f"non-finite loss {value} or gradient norm {float(grad_norm)}"
            return StepReport({"bpd": value}, cfg.batch_size, {"lr": lr}, skipped=True, detail=detail)
        self.optimizer.step()
        return StepReport({"bpd": value}, cfg.batch_size, {"lr": lr})

    def validate(self, step: int) -> dict[str, float]:
        seed = derive_seed(self.config.seed, "val")
        value = reference_dataset_bits_per_dim(self.model, self.val_set, 256, seed, self.device)
        self.model.train()
        return {"val_bpd": value}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])

    def resume_key(self) -> dict[str, Any]:
        return jsonable({"train": self.config.trajectory(), "model": REFERENCE_NAME})

    def divergence_advice(self) -> str:
        return "a lower learning rate (--reference-recipe theirs: Adam at 1e-4)"


def run_reference(args, module, raw_test: ImageSet) -> dict:
    root = Path(args.mnist)
    train_set, val_set = (load_mnist_partition(root, s, pad_to=32) for s in ("train", "val"))
    model = build_reference(module, args)
    config = train_params(args, THEIR_RECIPE if args.reference_recipe == "theirs" else None)
    trainer = ReferenceTrainer(model, train_set, val_set, config)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as checkpoints:
        started = time.monotonic()
        result = run_training(
            trainer,
            LoopConfig.from_settings(config),
            Path(checkpoints),
            progress_bar=args.progress,
            description=f"train {REFERENCE_NAME}",
        )
        trained_s = time.monotonic() - started
    test_bpd = reference_dataset_bits_per_dim(model, raw_test, 256, 0, trainer.device)
    return {
        "variant": REFERENCE_NAME,
        "test_bpd": test_bpd,
        "test_bpd_raw": test_bpd,
        "test_bpd_eq41": "n/a",
        "val_bpd": result.val["val_bpd"],
        "steps": result.steps,
        "images_per_s": result.images_per_s,
        "train_s": trained_s,
        "params": parameter_count(model),
        "load1": load,
        "device": result.device,
        "recipe": f"{config.optimizer} lr={config.lr:g} warmup={config.warmup_steps} grad_clip={config.grad_clip}",
    }


def print_row(r: dict) -> None:
    recipe = f" recipe=({r['recipe']})" if "recipe" in r else ""
    print(
        f"test_bpd={r['test_bpd']:.4f} variant={r['variant']} test_bpd_raw={r['test_bpd_raw']:.4f} "
        f"test_bpd_eq41={r['test_bpd_eq41']} val_bpd={r['val_bpd']:.4f} steps={r['steps']} "
        f"images_per_s={r['images_per_s']:.1f} train_s={r['train_s']:.0f} params={r['params']} "
        f"load1_at_start={r['load1']:.2f} device={r['device']}{recipe}",
        flush=True,
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="*", default=["bplf_3x3_svd", "glow"], help="none: the reference alone")
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget per model")
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
    p.add_argument("--reference", default=None, help="path to rosinality's glow-pytorch model.py (trained last)")
    p.add_argument(
        "--reference-recipe",
        choices=("same", "theirs"),
        default="same",
        help="the reference's optimizer: ours (same lr, warm-up, clipping) or its train.py's (Adam 1e-4)",
    )
    p.add_argument(
        "--mnist", default=os.environ.get("EMOFLOW_DATASETS", str(ROOT.parent / "shared" / "datasets")) + "/mnist"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    module = load_reference(args.reference) if args.reference else None  # fail before training anything
    given = sys.argv[1:] if argv is None else list(argv)
    print(f"# command: {shlex.join(['python', 'bench/bench_mnist_quality.py', *given])}")
    print(
        f"# MNIST 32x32 8 bits, L={args.levels} K={args.steps} hidden={args.hidden} batch={args.batch} lr={args.lr} "
        f"warmup={args.warmup} budget={args.minutes:g} min per model, one after another, unconditional, "
        f"torch_threads={torch.get_num_threads()}, cpus={os.cpu_count()}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, torch {torch.__version__}",
        flush=True,
    )
    raw_test = load_mnist_partition(Path(args.mnist), "test", pad_to=32)
    rows = []
    for variant in args.variant:
        rows.append(run_emoflow(args, variant, raw_test))
        print_row(rows[-1])
    if module is not None:
        rows.append(run_reference(args, module, raw_test))
        print_row(rows[-1])
        ours = min((r for r in rows if r["variant"] != REFERENCE_NAME), key=lambda r: r["test_bpd_raw"], default=None)
        if ours is not None:
            theirs = rows[-1]["test_bpd_raw"]
            verdict = "lower" if ours["test_bpd_raw"] < theirs else "NOT lower"
            print(
                f"# raw test digits: best emoflow {ours['variant']} {ours['test_bpd_raw']:.4f} vs {REFERENCE_NAME} "
                f"{theirs:.4f} bits/dim in {args.minutes:g} min each: emoflow {verdict}"
            )


if __name__ == "__main__":
    main()
