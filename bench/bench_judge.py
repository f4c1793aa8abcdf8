"""The emotion judge on FER2013 in a wall-clock budget: PublicTest accuracy, with and without test-time flip.

    python bench/bench_judge.py                         # 20 minutes on the default judge and settings (params)
    python bench/bench_judge.py --minutes 20 --no-class-weighting
    python bench/bench_judge.py --minutes 20 --no-augment
    python bench/bench_judge.py --shards data/home/shards --minutes 5 --widths 16,32,64,128

Data: FER2013 only. Without ``--shards`` a shard set is built (``pipelines.prepare.prepare``, source fer2013) in a
temporary folder from ``<datasets>/fer2013/fer2013-train.zip`` and ``<datasets>/fer2013-publictest/
fer2013-publictest.zip`` linked side by side (the Kaggle image layout: ``train/`` rows are the train split,
``test/PublicTest_*`` the val split; the reader keeps FER2013's own Usage split). With ``--shards`` the FER2013 rows
of that shard set are read. PublicTest (the val split) is never trained or early-stopped on: early stopping uses
``--holdout`` (default 10%) of the train rows, drawn with the seed, so the PublicTest figure is a clean held-out one.

Training is the pipeline's (``recognition.JudgeTrainer`` through ``training.run_training``) with the settings of
``params.yaml``'s judge section (``pipelines.model_params.JudgeParams``) except what the flags change, and the
budget ``--minutes`` of wall time (validation included). ``--no-class-weighting`` and ``--no-augment`` are the
ablation switches: run them in the same budget on the same machine and compare the PublicTest lines.

Prints: what it was computed on (shard version, split, command, device, threads), images/s, steps, epochs, why it
stopped, the best hold-out step, and PublicTest accuracy / balanced accuracy of the best-hold-out model with and
without test-time flip (and of the last weights), beside the majority class. The published mini-Xception figure on
FER2013's (private) test split is 66% (Arriaga et al. 2017).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_flow_throughput.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowmodels.data import ImageSet, load_shard_split  # noqa: E402
from pipelines.model_params import AugmentParams  # noqa: E402
from pipelines.params import load_params  # noqa: E402
from recognition.network import build_judge  # noqa: E402
from recognition.scoring import predict_probabilities  # noqa: E402
from recognition.training import JudgeTrainer  # noqa: E402
from scoring.classification import classification_metrics, confusion_matrix  # noqa: E402
from training.loop import LoopConfig, run_training  # noqa: E402
from training.seeds import generator  # noqa: E402


def build_fer_shards(datasets: Path, home: Path) -> Path:
    """FER2013 train + PublicTest zips, linked into one source folder, through ``prepare``: the shard-set folder."""
    from pipelines.prepare import prepare

    zips = [datasets / "fer2013" / "fer2013-train.zip", datasets / "fer2013-publictest" / "fer2013-publictest.zip"]
    missing = [str(z) for z in zips if not z.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)} (set --datasets or EMOFLOW_DATASETS)")
    source = home / "raw" / "fer2013"
    source.mkdir(parents=True)
    for z in zips:
        (source / z.name).symlink_to(z)
    data = load_params().data.replace(raw_root=str(home / "raw"), sources=("fer2013",))
    t0 = time.perf_counter()
    shard_set = prepare(data, home / "home")
    print(f"built shards {shard_set.path} in {time.perf_counter() - t0:.0f} s", flush=True)
    return Path(shard_set.path)


def holdout_split(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    order = torch.randperm(len(train), generator=generator(seed, "bench-holdout"))
    cut = int(round(len(train) * fraction))
    return (
        train.subset(order[cut:].sort().values, f"{train.name}/fit"),
        train.subset(order[:cut].sort().values, f"{train.name}/holdout"),
    )


def score(model, images: ImageSet, batch_size: int, flip: bool) -> dict[str, float]:
    predicted = predict_probabilities(model, images, batch_size, test_time_flip=flip).argmax(1)
    confusion = confusion_matrix(images.labels.numpy(), predicted, model.num_classes)
    return classification_metrics(confusion, images.class_names)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget (default 20)")
    parser.add_argument("--shards", type=Path, help="an existing shard set (or shards root) holding FER2013 rows")
    parser.add_argument(
        "--datasets", type=Path, default=Path(os.environ.get("EMOFLOW_DATASETS", ROOT.parent / "shared" / "datasets"))
    )
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of train rows early-stopped on")
    parser.add_argument("--no-class-weighting", action="store_true", help="plain cross-entropy (ablation)")
    parser.add_argument("--no-augment", action="store_true", help="no augmentation (ablation)")
    parser.add_argument("--widths", help="stage widths, e.g. 16,32,64,128 (default: params)")
    parser.add_argument("--batch-size", type=int, help="default: params")
    parser.add_argument("--lr", type=float, help="default: params")
    parser.add_argument("--val-every", type=int, help="steps between hold-out validations (default: params)")
    parser.add_argument("--patience", type=int, help="validations without a new best before stopping (default: params)")
    parser.add_argument("--seed", type=int, help="default: params")
    parser.add_argument("--device", help="auto | cpu | cuda (default: params)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    judge_params = load_params().judge
    changes = {"max_steps": None, "max_epochs": None, "max_seconds": args.minutes * 60.0, "checkpoint_every": 0}
    for name in ("batch_size", "lr", "val_every", "patience", "seed", "device"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.no_class_weighting:
        changes["class_weighting"] = "none"
    if args.no_augment:
        changes["augment"] = AugmentParams()
    cfg = judge_params.train.replace(**changes)
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else judge_params.widths

    with tempfile.TemporaryDirectory(prefix="bench_judge_") as tmp:
        shards = args.shards if args.shards is not None else build_fer_shards(args.datasets.resolve(), Path(tmp))
        train_all = load_shard_split(shards, "train", sources=["fer2013"])
        public = load_shard_split(shards, "val", sources=["fer2013"])
        if not len(public):
            raise SystemExit(
                f"{shards}: no FER2013 val (PublicTest) rows; link fer2013-publictest.zip beside the train zip"
            )
        fit, holdout = holdout_split(train_all, args.holdout, cfg.seed)
        print(
            f"computed on: shard set {public.name.split('/')[1]} ({shards}); train split fer2013 rows: {len(fit)} fit "
            f"+ {len(holdout)} hold-out (early stopping); evaluated on split val = FER2013 PublicTest, {len(public)} rows"
        )
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        model = build_judge(fit.image_shape, len(fit.class_names), widths, judge_params.dropout, seed=cfg.seed)
        trainer = JudgeTrainer(model, fit, holdout, cfg)
        print(
            f"device: {trainer.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}; judge "
            f"widths {list(widths)}, {sum(p.numel() for p in model.parameters()):,} parameters; batch {cfg.batch_size}, "
            f"lr {cfg.lr:g} ({cfg.optimizer}, wd {cfg.weight_decay:g}), class_weighting {cfg.class_weighting}, "
            f"augment {cfg.augment.model_dump(exclude_defaults=True) or 'off'}, label_smoothing {cfg.label_smoothing}, "
            f"patience {cfg.patience} x {cfg.val_every} steps; budget {args.minutes:g} min",
            flush=True,
        )

        def on_progress(event: dict) -> None:
            if event["event"] == "val":
                print(
                    f"  step {event['step']}: hold-out accuracy {event['val_accuracy']:.4f}, "
                    f"balanced {event['val_balanced_accuracy']:.4f}, loss {event['val_loss']:.4f}",
                    flush=True,
                )

        t0 = time.perf_counter()
        result = run_training(
            trainer, LoopConfig.from_settings(cfg), Path(tmp) / "checkpoints", on_progress=on_progress
        )
        wall = time.perf_counter() - t0

    labels = public.labels.numpy()
    majority = np.bincount(labels, minlength=7).max() / len(labels)
    print(
        f"images_per_s={result.images_per_s:.0f} steps={result.steps} epochs={result.epochs:.2f} "
        f"stopped_by={result.stopped_by} wall_s={wall:.0f} best_holdout_step={trainer.best_step} "
        f"best_holdout_accuracy={trainer.best_accuracy:.4f}"
    )
    batch = max(256, cfg.batch_size)
    for name, judge in (("best", trainer.final_model()), ("last", trainer.model)):
        for flip in (False, True):
            m = score(judge, public, batch, flip)
            print(
                f"publictest_accuracy={m['accuracy']:.4f} balanced={m['balanced_accuracy']:.4f} weights={name} "
                f"test_time_flip={str(flip).lower()}  (majority class {majority:.4f}; mini-Xception paper: 0.66 on "
                f"PrivateTest)"
            )
    best = score(trainer.final_model(), public, batch, True)
    print(
        "per-class recall (best, flip): "
        + ", ".join(f"{c} {best[f'recall_{c}']:.3f}" for c in public.class_names if f"recall_{c}" in best)
    )


if __name__ == "__main__":
    main()
