"""NFGAN's training throughput (images/s of Algorithm 1's step: generator, discriminator, the frozen feature
networks) and of its identity network, and optionally the held-out pixel L1 against doing nothing over a budget.
Prints one line per figure.

    python bench/bench_nfgan.py --shards data/shards/current --device cpu
    python bench/bench_nfgan.py --shards PATH --device cuda --l1-steps 3000 --check-every 250
    python bench/bench_nfgan.py --shards PATH --small --timed-steps 5    # the run tests' narrow networks

``--shards``: an EmotionSet shard set (or a shards root with ``current``) with NFGAN pairs (JAFFE, original-layout
CK+, MMI); faces of another size are resized to ``nfgan.image_size`` as ``train_nfgan`` does. The networks are
``params.yaml``'s ``nfgan`` section (``--small``: Tables 1-3 at 1/4 to 1/8 of the filters, as in
``tests/runs/test_nfgan.py``). The identity network is untrained for the throughput figures (a step costs the same);
``--l1-steps`` first trains it ``nfgan.identity.train.max_steps`` steps, then NFGAN, reporting every
``--check-every`` steps the val and test pairs' L1 (eq. 7, [-1, 1] scale) beside the input's own L1 to the neutral.
Figures: median images/s over ``--timed-steps`` after ``--warmup`` untimed steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_flow_throughput.py

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adversarial.nfgan.identity import IdentityTrainer, build_identity_network, load_identity_set  # noqa: E402
from adversarial.nfgan.networks import build_networks  # noqa: E402
from adversarial.nfgan.training import NFGANTrainer, build_extractors  # noqa: E402
from flowmodels.data import ImageSet  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from pipelines.shards import resolve_shard_set  # noqa: E402
from runs.datasets import emotionset_ref  # noqa: E402
from runs.nfgan_data import normalize_faces, resize_faces, shard_pairs, split_pairs  # noqa: E402
from training.loop import LoopConfig, run_training  # noqa: E402

SMALL = {
    "encoder_widths": (8, 16, 32, 64),
    "encoder_hidden": 64,
    "decoder_widths": (64, 32, 16, 8),
    "discriminator_widths": (8, 16, 32, 32),
}


def section(args):
    nfgan = load_params().nfgan
    train = nfgan.train.replace(device=args.device, val_every=0, checkpoint_every=0)
    identity = nfgan.identity.replace(train=nfgan.identity.train.replace(device=args.device, checkpoint_every=0))
    if args.small:
        identity = identity.replace(widths=(8, 16, 16, 16), embedding=32, train=identity.train.replace(batch_size=16))
        return nfgan.replace(**SMALL, identity=identity, train=train.replace(batch_size=16, lr=1e-3))
    return nfgan.replace(identity=identity, train=train)


def step_rate(trainer, steps: int, warmup: int, batch: int, device: str) -> float:
    times = []
    for step in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        report = trainer.train_step(step)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if report.skipped:
            raise RuntimeError(f"step {step} skipped: {report.detail}")
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def l1(model, pairs, batch: int) -> tuple[float, float]:
    """(output L1, input L1) to the true neutral on the [-1, 1] scale."""
    out = normalize_faces(model, pairs.inputs, batch)
    return (
        float((out.float() - pairs.targets.float()).abs().mean() / 127.5),
        float((pairs.inputs.float() - pairs.targets.float()).abs().mean() / 127.5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="the run tests' narrow networks")
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--l1-steps", type=int, default=0, help="also train this many steps, reporting L1")
    parser.add_argument("--check-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_nfgan"), help="checkpoints of --l1-steps")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    nfgan = section(args)
    data = emotionset_ref(resolve_shard_set(args.shards))
    found = shard_pairs(data)
    train, val, test = (split_pairs(found, s, nfgan.image_size) for s in ("train", "val", "test"))
    faces = load_identity_set(data.path, "train", nfgan.identity.min_images, data.sources)
    faces = ImageSet(resize_faces(faces.images, nfgan.image_size), faces.labels, faces.name, faces.class_names)
    network = build_identity_network(faces, nfgan.identity, nfgan.identity.train.seed)
    identity_trainer = IdentityTrainer(network, faces, None, nfgan.identity.train)
    g, d = build_networks(nfgan, seed=nfgan.train.seed)
    print(
        f"nfgan generator_params={sum(p.numel() for p in g.parameters())} "
        f"discriminator_params={sum(p.numel() for p in d.parameters())} "
        f"identity_params={sum(p.numel() for p in network.parameters())} image_size={list(nfgan.image_size)} "
        f"face_size={list(data.image_shape[1:])} batch={nfgan.train.batch_size} device={args.device} "
        f"threads={torch.get_num_threads()} train_pairs={len(train.pairs)} identity_faces={len(faces)} "
        f"identity_subjects={len(faces.class_names)}",
        flush=True,
    )
    rate = step_rate(identity_trainer, args.timed_steps, args.warmup, nfgan.identity.train.batch_size, args.device)
    print(f"identity images_per_s={rate:.1f}", flush=True)
    perceptual, identity = build_extractors(network, nfgan)
    trainer = NFGANTrainer(g, d, train.pairs, None, nfgan, perceptual, identity)
    rate = step_rate(trainer, args.timed_steps, args.warmup, nfgan.train.batch_size, args.device)
    print(f"nfgan images_per_s={rate:.1f} (pairs a second, all five losses)", flush=True)

    if args.l1_steps:
        started = time.perf_counter()
        network = build_identity_network(faces, nfgan.identity, nfgan.identity.train.seed)
        identity_trainer = IdentityTrainer(network, faces, None, nfgan.identity.train)
        run_training(
            identity_trainer, LoopConfig.from_settings(nfgan.identity.train), args.out / "identity", resume=False
        )
        perceptual, identity = build_extractors(identity_trainer.final_model(), nfgan)
        g, d = build_networks(nfgan, seed=nfgan.train.seed)
        trainer = NFGANTrainer(g, d, train.pairs, None, nfgan, perceptual, identity)
        for step in range(args.l1_steps):
            trainer.train_step(step)
            if (step + 1) % args.check_every == 0 or step + 1 == args.l1_steps:
                model = trainer.final_model()
                figures = [f"{name}_l1={a:.4f} {name}_l1_input={b:.4f}" for name, s in (("val", val), ("test", test))
                           if s is not None for a, b in [l1(model, s.pairs, 256)]]  # fmt: skip
                print(f"step={step + 1} seconds={time.perf_counter() - started:.0f} " + " ".join(figures), flush=True)


if __name__ == "__main__":
    main()
