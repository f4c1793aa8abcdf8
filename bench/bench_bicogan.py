"""BiCoGAN's training throughput beside a flow of about its parameter count, and how long until its encoder's label
accuracy on the test split passes a level (beside that flow's Bayes-rule accuracy). Prints one line per figure.

    python bench/bench_bicogan.py --shards data/shards/current --device cpu
    python bench/bench_bicogan.py --shards PATH --device cuda --level 0.45 --max-seconds 600
    python bench/bench_bicogan.py --shards PATH --small --timed-steps 5 --max-steps 40   # a smoke run

``--shards``: an EmotionSet shard-set folder (or a shards root with ``current``). The BiCoGAN is ``params.yaml``'s
``bicogan`` section (``--small``: the real-data test's networks: widths 8/16/32, z 32, batch 32); the flow is
``model.variant`` (BPLF 3x3 + SVD) at levels 3 x steps 8 with the conditioner width whose parameter count is closest
to the BiCoGAN's G + E + D, trained on the same images (its ``pixel_column``) by ``FlowTrainer``. Both step through
their real trainers (augmentation, noise, optimizers). Figures: median images/s over ``--timed-steps`` steps after
``--warmup`` untimed ones; then training from the start with the test accuracy checked every ``--check-every``
steps (check time excluded) until ``--level`` or a budget.
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

from adversarial.bicogan import trainer_from_params  # noqa: E402
from flowmodels.classifier import bayes_predict  # noqa: E402
from flowmodels.data import load_shard_split  # noqa: E402
from flowmodels.training import FlowTrainer, build_seeded_model  # noqa: E402
from pipelines.params import load_params  # noqa: E402


def parameters(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def bicogan_section(args):
    section = load_params().bicogan
    train = section.train.replace(device=args.device, seed=args.seed, val_every=0, checkpoint_every=0)
    if args.small:
        return section.replace(
            z_dim=32, widths=(8, 16, 32), latent_width=128, joint_width=128, alpha=10.0, phi=10.0,
            train=train.replace(batch_size=32, lr=5e-4),
        )  # fmt: skip
    return section.replace(train=train)


def matched_flow(args, target: int, image_shape, num_classes: int):
    """The default flow variant, levels 3 x steps 8, with the hidden width (a multiple of 16) whose parameter
    count is closest to ``target``."""
    params = load_params()
    hp = params.model.hparams.model_dump()
    best = None
    for hidden in range(16, 769, 16):
        model = build_seeded_model(
            args.seed, params.model.variant, image_shape, num_classes, **{**hp, "hidden": hidden}
        )
        gap = abs(parameters(model) - target)
        if best is not None and gap > best[0]:
            break  # the count grows with the width
        best = (gap, hidden, model)
    train = params.train.replace(device=args.device, seed=args.seed, batch_size=bicogan_section(args).train.batch_size)
    return best[2], best[1], train


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


def until_level(name, trainer, accuracy, args) -> None:
    """Train from step 0, checking ``accuracy()`` every ``check_every`` steps; print when it passes the level."""
    compute, step, best = 0.0, 0, 0.0
    while step < args.max_steps and compute < args.max_seconds:
        t0 = time.perf_counter()
        for _ in range(args.check_every):
            trainer.train_step(step)
            step += 1
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        compute += time.perf_counter() - t0
        best = max(best, acc := accuracy())
        print(f"{name} step={step} seconds={compute:.1f} test_accuracy={acc:.3f}", flush=True)
        if acc >= args.level:
            print(f"{name} reached_level={args.level} steps={step} seconds={compute:.1f}", flush=True)
            return
    print(f"{name} level_not_reached={args.level} steps={step} seconds={compute:.1f} best={best:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True, type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small", action="store_true", help="the real-data test's small BiCoGAN")
    parser.add_argument("--timed-steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--level", type=float, default=0.40, help="test accuracy to reach (majority class: 0.28)")
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-flow", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    section = bicogan_section(args)
    train, val, test = (load_shard_split(args.shards, s) for s in ("train", "val", "test"))
    gan = trainer_from_params(section, train, val)
    test6, _ = gan.class_map.apply(test)
    n_gan = parameters(gan.model)
    print(
        f"bicogan params={n_gan} (G {parameters(gan.model.generator)}, E {parameters(gan.model.encoder)}, "
        f"D {parameters(gan.model.discriminator)}) widths={list(section.widths)} batch={section.train.batch_size} "
        f"device={args.device} threads={torch.get_num_threads()} train_images={len(gan.train_set)} "
        f"test_images={len(test6)} majority={float(torch.bincount(test6.labels).max()) / len(test6):.3f}",
        flush=True,
    )
    batch = section.train.batch_size
    print(f"bicogan images_per_s={step_rate(gan, args.timed_steps, args.warmup, batch, args.device):.1f}", flush=True)

    flow_parts = None
    if not args.skip_flow:
        flow, hidden, flow_train = matched_flow(args, n_gan, train.image_shape, len(train.class_names))
        column = flow.pixel_column
        flow_sets = [load_shard_split(args.shards, s, column=column) for s in ("train", "val", "test")]
        flow_trainer = FlowTrainer(flow, flow_sets[0], None, flow_train)
        flow_trainer.initialize()
        print(
            f"flow variant={flow.config['variant']} hidden={hidden} params={parameters(flow)} column={column}",
            flush=True,
        )
        rate = step_rate(flow_trainer, args.timed_steps, args.warmup, flow_train.batch_size, args.device)
        print(f"flow images_per_s={rate:.1f}", flush=True)
        flow_parts = (flow, hidden, flow_train, flow_sets)

    # time to the level, both from scratch
    gan = trainer_from_params(section, train, val)

    def gan_accuracy() -> float:
        return float((gan.final_model().classify(test6.images).argmax(1) == test6.labels).float().mean())

    until_level("bicogan", gan, gan_accuracy, args)
    if flow_parts is not None:
        _, hidden, flow_train, flow_sets = flow_parts
        flow, _, _ = matched_flow(args, n_gan, train.image_shape, len(train.class_names))
        flow_trainer = FlowTrainer(flow, flow_sets[0], None, flow_train)
        flow_trainer.initialize()
        flow_test = flow_sets[2].subset(torch.nonzero(flow_sets[2].labels != 1).squeeze(1))  # the same 6-class faces

        @torch.no_grad()
        def flow_accuracy() -> float:
            flow.eval()
            device = flow_trainer.device
            predicted = torch.cat(
                [
                    bayes_predict(flow, flow_test.images[i : i + 128].to(device)).cpu()
                    for i in range(0, len(flow_test), 128)
                ]
            )
            flow.train()
            return float((predicted == flow_test.labels).float().mean())

        until_level("flow", flow_trainer, flow_accuracy, args)


if __name__ == "__main__":
    main()
