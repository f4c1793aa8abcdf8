"""Training-step throughput of emoflow's flows (forward, backward, Adam step), optionally beside rosinality's
glow-pytorch at identical architecture. Prints one ``images_per_s=<float> ...`` line per configuration.

    python bench/bench_flow_throughput.py --variant glow --steps 8 --device cpu
    python bench/bench_flow_throughput.py --variant glow bplf_3x3 --steps 8 16 32 --reference /tmp/glow-pytorch/model.py

``--reference PATH`` is a local copy of rosinality's ``model.py`` (never committed here). It is timed in the same
process, interleaved with ours (ours, theirs, ours, theirs, ...: machine noise hits both alike), at the same L,
K, batch and image size, with its affine coupling and LU 1x1 convolution; for ``bplf_*_3x3`` variants its
conditioner's middle 1x1 convolution is replaced by a 3x3 one so both run the same convolutions. Its hidden
width is fixed at 512 in its code: use ``--hidden 512`` with it. Figures are medians over the timed steps.

Switches: ``--no-channels-last``, ``--no-winograd`` and ``--compile`` (ours only), ``--compile-reference``,
``--bf16`` (autocast), ``--fused-adam`` and ``--threads N`` (both implementations). OMP_WAIT_POLICY defaults to
PASSIVE (see below). See bench/README.md for what each gave.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import statistics
import sys
import time
from pathlib import Path

# On a shared machine, OpenMP worker threads that spin while waiting (the default) fight other processes for
# the cores and stretch every small operator to a scheduler time slice; passive waiting made step times 2-4x
# less noisy here (bench/README.md). It must be set before torch loads OpenMP; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flowmodels import VARIANTS, build_model  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


class OursStep:
    """One training step of a flowmodels model."""

    name = "emoflow"

    def __init__(self, args, variant: str, steps: int, images: torch.Tensor):
        torch.manual_seed(0)
        self.device, self.bf16 = args.device, args.bf16
        size = args.image_size
        self.model = build_model(
            variant,
            (1, size, size),
            levels=args.levels,
            steps=steps,
            hidden=args.hidden,
            n_bits=8,
            channels_last=not args.no_channels_last,
            winograd=not args.no_winograd,
        ).to(args.device)
        self.images = images.to(args.device)
        self.model.initialize(self.images)  # actnorm data init, eagerly, before any compile
        self.optimizer = make_optimizer(self.model, args)
        self.loss_fn = self.model
        if args.compile:
            self.loss_fn = torch.compile(self.model)

    def __call__(self) -> float:
        with _autocast(self.device, self.bf16):
            loss = self.loss_fn(self.images).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().item()


def make_optimizer(model, args):
    """Adam at lr 1e-4 (rosinality's train.py), the same for both implementations; --fused-adam uses
    PyTorch's single-kernel Adam instead of its per-parameter loop."""
    return torch.optim.Adam(model.parameters(), lr=1e-4, fused=True if args.fused_adam else None)


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("rosinality_glow_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReferenceStep:
    """One training step of rosinality's Glow, as its train.py does it (n_bins noise, calc_loss)."""

    name = "rosinality"

    def __init__(self, args, variant: str, steps: int, images: torch.Tensor, module):
        torch.manual_seed(0)
        if args.hidden != 512:
            raise SystemExit("rosinality's glow-pytorch has its hidden width fixed at 512: use --hidden 512")
        self.device, self.bf16 = args.device, args.bf16
        self.model = module.Glow(1, steps, args.levels, affine=True, conv_lu=True)
        if VARIANTS[variant].conditioner == "3x3":
            # same conditioner as ours: 3x3 -> 3x3 -> zero 3x3 (theirs is 3x3 -> 1x1 -> zero 3x3)
            for m in self.model.modules():
                if isinstance(m, module.AffineCoupling):
                    mid = torch.nn.Conv2d(512, 512, 3, padding=1)
                    mid.weight.data.normal_(0, 0.05)
                    mid.bias.data.zero_()
                    m.net[2] = mid
        self.model.to(args.device)
        self.n_bins = 256.0
        self.n_pixel = args.image_size * args.image_size
        self.images = (images.float() / self.n_bins - 0.5).to(args.device)
        with torch.no_grad():  # their train.py initialises actnorm on the first batch the same way
            self.model(self.images + torch.rand_like(self.images) / self.n_bins)
        self.optimizer = make_optimizer(self.model, args)
        self.forward = torch.compile(self.model) if args.compile_reference else self.model

    def __call__(self) -> float:
        with _autocast(self.device, self.bf16):
            log_p, logdet, _ = self.forward(self.images + torch.rand_like(self.images) / self.n_bins)
        logdet = logdet.mean()
        loss = -math.log(self.n_bins) * self.n_pixel + logdet + log_p
        loss = (-loss / (math.log(2) * self.n_pixel)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().item()


def time_step(step, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    loss = step()
    _sync(device)
    elapsed = time.perf_counter() - start
    if not math.isfinite(loss):
        raise RuntimeError(f"{step.name}: non-finite loss {loss}")
    return elapsed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", default=["glow", "bplf_3x3"], choices=sorted(VARIANTS))
    p.add_argument("--steps", nargs="+", type=int, default=[8], help="K, steps per level")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW convolutions in the conditioners")
    p.add_argument("--no-winograd", action="store_true", help="direct 3x3 hidden convolutions (bplf_3x3*)")
    p.add_argument("--compile", action="store_true", help="torch.compile our loss")
    p.add_argument("--compile-reference", action="store_true", help="torch.compile the reference's forward")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (both implementations)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--fused-adam", action="store_true", help="Adam(fused=True) (both implementations)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation (more with --compile)")
    p.add_argument("--iters", type=int, default=6, help="timed steps per implementation, interleaved")
    p.add_argument("--reference", default=None, help="path to rosinality's glow-pytorch model.py")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reference = load_reference(args.reference) if args.reference else None
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 1, args.image_size, args.image_size), dtype=torch.uint8, generator=gen)
    switches = (
        f"bf16={int(args.bf16)} "
        f"fused_adam={int(args.fused_adam)} threads={torch.get_num_threads()} "
        f"omp_wait_policy={os.environ.get('OMP_WAIT_POLICY')}"
    )
    for variant in args.variant:
        for steps in args.steps:
            runners = [OursStep(args, variant, steps, images)]
            if reference is not None:
                runners.append(ReferenceStep(args, variant, steps, images, reference))
            for r in runners:
                for _ in range(args.warmup):
                    time_step(r, args.device)
            # Interleaved one step at a time, alternating who goes first: a burst of load from another process
            # falls on both implementations, and the paired ratios cancel most of it.
            times = {r.name: [] for r in runners}
            for i in range(args.iters):
                for r in runners if i % 2 == 0 else runners[::-1]:
                    times[r.name].append(time_step(r, args.device))
            medians = {name: statistics.median(t) for name, t in times.items()}
            for r in runners:
                line = (
                    f"images_per_s={args.batch / medians[r.name]:.3f} impl={r.name} variant={variant} "
                    f"L={args.levels} K={steps} hidden={args.hidden} batch={args.batch} "
                    f"image={args.image_size}x{args.image_size}x1 device={args.device} "
                    f"step_s_median={medians[r.name]:.3f} step_s_min={min(times[r.name]):.3f} n={len(times[r.name])}"
                )
                layout = (
                    f"channels_last={int(not args.no_channels_last)} winograd={int(not args.no_winograd)} "
                    f"compile={int(args.compile)}"
                    if r.name == "emoflow"
                    else f"layout=theirs(NCHW) compile={int(args.compile_reference)}"
                )
                print(f"{line} {layout} {switches}", flush=True)
            if reference is not None:
                ratios = [t / o for o, t in zip(times["emoflow"], times["rosinality"])]
                print(
                    f"speedup={statistics.median(ratios):.3f} variant={variant} K={steps} "
                    f"speedup_of_medians={medians['rosinality'] / medians['emoflow']:.3f} "
                    f"speedup_of_mins={min(times['rosinality']) / min(times['emoflow']):.3f} "
                    f"(emoflow over rosinality throughput; speedup = median of the {len(ratios)} paired step ratios)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
