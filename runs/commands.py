"""The ``emoflow`` commands that train, evaluate and use models: train, evaluate, sample, classify, normalize.

They call the run functions directly (no Dagster run): the same functions the Dagster assets and the DVC stages
call. `pipelines.cli` finds them through the ``emoflow.commands`` entry point (it never imports this layer).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from pipelines.params import Params, emoflow_home, load_params
from runs.context import RunContext
from runs.datasets import DATASETS, DatasetRef, enabled_sources_ref, mnist_ref
from runs.families import family_of
from runs.lifecycle import write_json


def _context(args) -> RunContext:
    sources = [s for s in (getattr(args, "sources", None) or "").split(",") if s]
    settings = load_params(getattr(args, "params", None)).with_overrides(sources=sources or None)
    return RunContext.create(settings, emoflow_home(), progress_bars=True)


def _variant(args, settings: Params) -> str:
    return args.variant or settings.model.variant


def dataset_for(ctx: RunContext, dataset: str, shards: str | None) -> DatasetRef:
    """The data a command trains or scores on: a shard set (``--shards``, default $EMOFLOW_HOME/shards's
    current version) narrowed to the settings' sources, or MNIST."""
    if dataset == "mnist":
        return mnist_ref(ctx.settings)
    return enabled_sources_ref(ctx.settings, Path(shards) if shards else ctx.home / "shards")


def cmd_train(args) -> int:
    ctx = _context(args)
    variant = _variant(args, ctx.settings)
    family = family_of(variant, ctx.settings)
    data = dataset_for(ctx, args.dataset, args.shards)
    outcome = family.train(ctx, variant, data, max_steps=args.max_steps, resume=not args.no_resume)
    result = outcome.result
    summary = {
        "variant": variant,
        "dataset": data.dataset,
        "data_version": data.version,
        "registered_model": outcome.registered_model,
        "model_version": outcome.model_version,
        "mlflow_run_id": outcome.run_id,
        "reused": outcome.reused,
        "steps": result["steps"],
        "stopped_by": result["stopped_by"],
        "resumed_from_step": result["resumed_from_step"],
        "images_per_s": result["images_per_s"],
        "skipped_steps": result["skipped_steps"],
        "final": result["final"],
        "val": result["val"],
        "checkpoint": outcome.checkpoint,
    }
    write_json(
        args.summary_out,
        {k: summary[k] for k in ("steps", "final", "val", "images_per_s", "skipped_steps", "model_version")},
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_evaluate(args) -> int:
    ctx = _context(args)
    variant = _variant(args, ctx.settings)
    family = family_of(variant, ctx.settings)
    data = dataset_for(ctx, args.dataset, args.shards)
    trained = family.trained(ctx, variant, data, max_steps=args.max_steps)
    if trained is None:
        print(
            f"emoflow: no finished training run of {variant} on {data.dataset} {data.version} with these settings: "
            f"run `emoflow train --variant {variant}` first",
            file=sys.stderr,
        )
        return 2
    outcome = family.evaluate(ctx, trained, data)
    numbers = {k: v for k, v in outcome.metrics.items() if isinstance(v, float)}
    write_json(
        args.metrics_out,
        {
            **{f"test_{k}" if not k.startswith("test_") else k: v for k, v in numbers.items()},
            "promoted": outcome.promoted,
        },
    )
    if args.plots_dir:
        write_plots(Path(args.plots_dir), ctx, outcome.run_id, outcome.confusion)
    print(json.dumps(outcome.summary(), indent=2, default=str))
    return 0


def write_plots(plots: Path, ctx: RunContext, run_id: str, confusion: dict | None) -> None:
    """DVC plots: the training curve of the first loss and the test confusion matrix (one row per image)."""
    plots.mkdir(parents=True, exist_ok=True)
    client = ctx.tracking.client()
    history = client.get_metric_history(run_id, "train.bpd")
    with open(plots / "bpd_curve.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "bpd"])
        writer.writerows([m.step, m.value] for m in sorted(history, key=lambda m: m.step))
    with open(plots / "confusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        if confusion is not None:
            classes = confusion["classes"]
            for i, row in enumerate(confusion["confusion"]):
                for j, count in enumerate(row):
                    writer.writerows([classes[i], classes[j]] for _ in range(int(count)))


def model_from_checkpoint_file(path: str):
    """The model of any family's training checkpoint (last.pt), by the checkpoint's kind."""
    from training.checkpoints import load_checkpoint

    state = load_checkpoint(path)
    kind = state.get("kind")
    if kind == "flow":
        from flowmodels.training import model_from_checkpoint

        return model_from_checkpoint(state)
    if kind == "judge":
        from recognition.training import judge_from_checkpoint

        return judge_from_checkpoint(state)
    if kind == "bicogan":
        from adversarial.bicogan.model import bicogan_from_checkpoint

        return bicogan_from_checkpoint(state)
    if kind == "flow_latent_classifier":
        from flowmodels.classifier_training import classifier_from_checkpoint

        return classifier_from_checkpoint(state)
    raise SystemExit(f"emoflow: {path} is a {kind!r} checkpoint, which this command cannot load")


def load_model(args, ctx: RunContext):
    """A model from ``--model`` (an MLflow URI such as models:/emoflow-glow@champion) or ``--checkpoint``."""
    if args.checkpoint:
        return model_from_checkpoint_file(args.checkpoint)
    return ctx.tracking.load_model(args.model)


def cmd_sample(args) -> int:
    import torch

    from pipelines.labels import EMOTIONS

    ctx = _context(args)
    model = load_model(args, ctx).eval()
    if hasattr(model, "latents") and hasattr(model, "class_names"):  # BiCoGAN: z drawn from --seed
        if args.emotion not in model.class_names:
            raise SystemExit(f"emoflow: --emotion must be one of {list(model.class_names)}")
        return _write_grid(model.sample(args.n, args.emotion, args.seed).numpy(), args, args.emotion)
    torch.manual_seed(args.seed)
    y = None
    if model.num_classes:
        names = EMOTIONS if model.num_classes == len(EMOTIONS) else tuple(str(i) for i in range(model.num_classes))
        if args.emotion not in names:
            raise SystemExit(f"emoflow: --emotion must be one of {list(names)}")
        y = names.index(args.emotion)
    with torch.no_grad():
        images = model.to_uint8(model.sample(args.n, y=y, temperature=args.temperature)).cpu().numpy()
    return _write_grid(images, args, args.emotion if y is not None else None)


def _write_grid(images, args, emotion: str | None) -> int:
    import numpy as np
    from PIL import Image

    n, _, h, w = images.shape
    cols = min(n, 8)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i, 0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    print(
        json.dumps(
            {
                "out": str(out),
                "n": n,
                "emotion": emotion,
                "temperature": args.temperature,
            }
        )
    )
    return 0


def cmd_classify(args) -> int:
    from runs.classify import classify_photos

    ctx = _context(args)
    model = load_model(args, ctx).eval()
    results = classify_photos(ctx, model, args.model, args.images, args.precropped)
    print(json.dumps(results, indent=2))
    return 0


def cmd_edit(args) -> int:
    from runs.editing import edit_photos

    ctx = _context(args)
    model = load_model(args, ctx).eval()
    print(json.dumps(edit_photos(ctx, model, args.images, args.emotion, Path(args.out), args.precropped), indent=2))
    return 0


def cmd_normalize(args) -> int:
    from runs.normalize import load_normalizer, normalize_photos

    ctx = _context(args)
    model = load_normalizer(ctx, args.model, args.checkpoint)
    report = normalize_photos(ctx, model, args.images, Path(args.out), args.precropped)
    print(json.dumps(report, indent=2))
    for photo in report["photos"]:
        if not photo["faces"]:
            print(f"emoflow: {photo['file']}: {photo['reason']}", file=sys.stderr)
    return 0 if report["faces"] else 1


def cmd_scoreboard(args) -> int:
    from runs.scoreboard import SCORE_COLUMNS, compute_scoreboard, record_scoreboard

    ctx = _context(args)
    board = compute_scoreboard(ctx, dataset_for(ctx, "emotionset", args.shards))
    written = record_scoreboard(ctx, board)
    # DVC metrics: one flat mapping, "<model>.<score>" -> value
    write_json(
        args.summary_out,
        {f"{row['model']}.{c}": row[c] for row in board.rows for c in SCORE_COLUMNS if row.get(c) is not None},
    )
    if args.json:
        print(json.dumps(board.as_json(), indent=2, default=float))
        return 0
    print(board.markdown())
    print(f"scores: {', '.join(SCORE_COLUMNS)}; written to {written['csv']} (MLflow run {written['run_id']})")
    return 0


def cmd_cross_dataset(args) -> int:
    from runs.cross_dataset import cross_dataset_matrix, record_cross_dataset

    ctx = _context(args)
    try:
        matrix = cross_dataset_matrix(ctx, dataset_for(ctx, "emotionset", args.shards))
    except ValueError as error:
        raise SystemExit(f"emoflow: {error}") from None
    written = record_cross_dataset(ctx, matrix)
    print(json.dumps({**matrix.as_dict(), "dir": written["dir"], "mlflow_run_id": written["run_id"]}, indent=2))
    return 0


def cmd_density_audit(args) -> int:
    from runs.density_audit import density_audit

    ctx = _context(args)
    model = None
    if args.checkpoint:
        from flowmodels.training import model_from_checkpoint

        model = model_from_checkpoint(args.checkpoint)
    known_bad = [i for i in (args.known_bad or "").split(",") if i]
    try:
        data = dataset_for(ctx, "emotionset", args.shards)
        outcome = density_audit(ctx, data, model, args.model, known_bad, variant=args.variant)
    except RuntimeError as error:
        raise SystemExit(f"emoflow: {error}") from None
    print(json.dumps({"out_dir": str(outcome.out_dir), "mlflow_run_id": outcome.run_id, **outcome.report}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model commands to `emoflow` (called by pipelines.cli through the entry point)."""
    for name, func, what in (
        ("train", cmd_train, "train one variant (resuming an interrupted run), track it in MLflow, register it"),
        ("evaluate", cmd_evaluate, "score the trained candidate on the test split and promote it when it wins"),
    ):
        p = subparsers.add_parser(name, help=what)
        p.add_argument("--params", default=None)
        p.add_argument("--variant", default=None, help="model variant (default: params model.variant)")
        p.add_argument("--dataset", default="emotionset", choices=DATASETS)
        p.add_argument("--shards", default=None, help="a shard set or shards root (default: $EMOFLOW_HOME/shards)")
        p.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
        p.add_argument("--max-steps", type=int, default=None, help="training budget override (steps)")
        if name == "train":
            p.add_argument("--no-resume", action="store_true", help="start over even when an interrupted run exists")
            p.add_argument(
                "--summary-out", default=None, help="also write the training figures to this JSON file (DVC metrics)"
            )
        else:
            p.add_argument(
                "--metrics-out", default=None, help="also write the test metrics to this JSON file (DVC metrics)"
            )
            p.add_argument(
                "--plots-dir", default=None, help="also write bpd_curve.csv and confusion.csv here (DVC plots)"
            )
        p.set_defaults(func=func)

    p = subparsers.add_parser(
        "density-audit", help="every face's bits/dim under a trained flow: the least likely faces per source"
    )
    p.add_argument("--params", default=None)
    p.add_argument("--shards", default=None, help="a shard set or shards root (default: $EMOFLOW_HOME/shards)")
    p.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--model", default=None, help="an MLflow model URI (default: the audited variant's champion)")
    model.add_argument("--checkpoint", default=None, help="a training checkpoint (last.pt) of the audited variant")
    p.add_argument("--variant", default=None, help="flow variant (default: params evaluate.density_audit.variant)")
    p.add_argument("--known-bad", default=None, help="comma-separated row ids whose ranks to report")
    p.set_defaults(func=cmd_density_audit)

    for name, func, what in (
        ("sample", cmd_sample, "a PNG grid of samples for an emotion"),
        (
            "classify",
            cmd_classify,
            "every face in each photo and its emotion probabilities (any classifying model), as JSON",
        ),
    ):
        p = subparsers.add_parser(name, help=what)
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--model", help="an MLflow model URI, e.g. models:/emoflow-bplf_3x3_svd@champion")
        source.add_argument("--checkpoint", help="a training checkpoint (last.pt)")
        p.add_argument("--params", default=None)
        if name == "edit":
            p.add_argument("--emotion", required=True)
            p.add_argument("--out", default="edited.png")
        if name == "sample":
            p.add_argument("--emotion", default="happiness")
            p.add_argument("--n", type=int, default=16)
            p.add_argument("--temperature", type=float, default=0.7)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", default="samples.png")
        if name in ("edit", "classify"):
            p.add_argument("images", nargs="+")
            p.add_argument(
                "--precropped", action="store_true", help="the images are face crops (FER2013's): skip face detection"
            )
        p.set_defaults(func=func)

    p = subparsers.add_parser(
        "normalize", help="every face in each photo turned into the same person's neutral face (NFGAN), as PNGs"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="an MLflow model URI, e.g. models:/emoflow-nfgan@champion")
    source.add_argument("--checkpoint", help="an NFGAN training checkpoint (last.pt)")
    p.add_argument("--params", default=None)
    p.add_argument("--out", required=True, help="folder for <photo>-face<k>.png (input | neutral) and -neutral.png")
    p.add_argument("images", nargs="+")
    p.add_argument("--precropped", action="store_true", help="the images are face crops: skip face detection")
    p.set_defaults(func=cmd_normalize)

    for name, func, what in (
        ("scoreboard", cmd_scoreboard, "every registered model scored on the same test images (runs.scoreboard)"),
        ("cross-dataset", cmd_cross_dataset, "train on each source alone, test on every source: accuracy/bpd matrices"),
    ):
        p = subparsers.add_parser(name, help=what)
        p.add_argument("--params", default=None)
        p.add_argument("--shards", default=None, help="a shard set or shards root (default: $EMOFLOW_HOME/shards)")
        p.add_argument("--sources", default=None, help="comma-separated sources (default: those enabled in params)")
        if name == "scoreboard":
            p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
            p.add_argument("--summary-out", default=None, help="also write every score to this JSON file (DVC metrics)")
        p.set_defaults(func=func)
