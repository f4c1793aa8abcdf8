"""The life of a model that every family shares: train it under a content key (or find it already trained),
track the run in MLflow, register it as a candidate; record its evaluation and promote it.

A family's run module says what is particular to it (how to build its Trainer, what its score is) and calls
``train_tracked`` and ``record_evaluation``; so every family gets the same MLflow run layout:

- tags: emoflow.family / variant / dataset / data_version / shard_version / train_key, the Dagster run when
  Dagster calls, the git commit; params: the model spec and training settings; inputs: the train and val
  splits as MLflow datasets whose digest is the data version; system metrics;
- metrics: train.<loss> and val.<metric> per logged step, train.final_*, train.seconds, train.images_per_s;
  after evaluation test.<metric> linked to the logged model and the test dataset;
- artifacts: training/result.json, evaluation/<figure>.png, evaluation/metrics.json, evaluation/promotion.json;
- the registry: ``emoflow-<variant>[-<dataset>]`` version with alias candidate; champion when it wins.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runs.context import RunContext
from runs.datasets import DatasetRef, key_of
from runs.outcomes import EvalOutcome, TrainOutcome
from runs.registry import CHAMPION, Score, decide, registered_model_name
from training.loop import LoopConfig, TrainResult, run_training

Build = Callable[[], tuple[Any, Any, LoopConfig]]  # () -> (trainer, model to register, loop config)


@dataclass
class TrainingSpec:
    """What ``train_tracked`` needs from a family. ``key_material``: everything that shapes the model (its
    spec, training settings, data identity, code version); ``build`` makes the Trainer only when training is
    really needed; ``signature``: the registered model's MLflow signature."""

    family: str
    variant: str
    data: DatasetRef
    key_material: dict[str, Any]
    params: dict[str, Any]
    pixel_column: str
    build: Build
    signature: Any = None
    description: str = ""


def checkpoint_dir(ctx: RunContext, variant: str, data: DatasetRef, key: str) -> Path:
    return ctx.home / "checkpoints" / variant / data.dataset / key


def find_trained(ctx: RunContext, spec: TrainingSpec) -> TrainOutcome | None:
    """The outcome of an earlier finished run with the same key, or None."""
    done = checkpoint_dir(ctx, spec.variant, spec.data, key_of(spec.key_material)) / "result.json"
    return TrainOutcome.load(done) if done.exists() else None


def _tags(ctx: RunContext, spec: TrainingSpec, key: str) -> dict[str, str]:
    return {
        **ctx.tags,
        "emoflow.family": spec.family,
        "emoflow.variant": spec.variant,
        "emoflow.dataset": spec.data.dataset,
        "emoflow.data_version": spec.data.version,
        "emoflow.shard_version": spec.data.version if spec.data.dataset == "emotionset" else "",
        "emoflow.train_key": key,
    }


def log_splits(ctx: RunContext, data: DatasetRef, splits: dict[str, str], column: str) -> dict[str, Any]:
    """Each split as an MLflow input of the active run (context: training / validation / test)."""
    return {
        split: ctx.tracking.log_dataset(
            data.split_key(split), data.version, data.path, context, {"column": column, "dataset": data.dataset}
        )
        for split, context in splits.items()
    }


def train_tracked(ctx: RunContext, spec: TrainingSpec, resume: bool = True) -> TrainOutcome:
    """Train, track and register — or return the earlier outcome when nothing that shapes the model changed."""
    key = key_of(spec.key_material)
    folder = checkpoint_dir(ctx, spec.variant, spec.data, key)
    done = folder / "result.json"
    name = registered_model_name(spec.variant, spec.data.dataset, spec.data.sources)
    if done.exists():
        previous = TrainOutcome.load(done)
        ctx.logger.info(
            "%s/%s: nothing changed since run %s: not training again", spec.variant, spec.data.dataset, previous.run_id
        )
        return previous
    started = time.monotonic()
    trainer, model, loop = spec.build()
    say = ctx.throttled(f"train {spec.variant}")
    with ctx.tracking.start_run(
        run_name=f"train {spec.variant} on {spec.data.dataset}", tags=_tags(ctx, spec, key)
    ) as run:
        mlflow = ctx.tracking.mlflow()
        mlflow.log_params(_flat(spec.params))
        log_splits(ctx, spec.data, {"train": "training", "val": "validation"}, spec.pixel_column)

        def on_progress(event: dict) -> None:
            step = int(event["step"])
            if event["event"] == "log":
                numbers = {
                    k: v
                    for k, v in event.items()
                    if k not in ("event", "step") and isinstance(v, (int, float)) and v is not None
                }
                mlflow.log_metrics(
                    {f"train.{k}": float(v) for k, v in numbers.items() if math.isfinite(float(v))}, step=step
                )
                losses = ", ".join(
                    f"{k} {event[k]:.4f}"
                    for k in numbers
                    if k not in ("elapsed", "epoch", "skipped_steps", "images_per_s", "lr")
                )
                say(
                    f"step {step}: {losses or 'no finite step in this window'}, {event.get('images_per_s', 0.0):.1f} images/s"
                )
            elif event["event"] == "val":
                values = {k: float(v) for k, v in event.items() if k not in ("event", "step")}
                mlflow.log_metrics({f"val.{k.removeprefix('val_')}": v for k, v in values.items()}, step=step)
                say(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), force=True)
            elif event["event"] == "skipped":
                ctx.logger.warning("train %s step %d: %s (update skipped)", spec.variant, step, event["detail"])

        result: TrainResult = run_training(
            trainer,
            loop,
            folder,
            on_progress=on_progress,
            progress_bar=ctx.progress_bars,
            resume=resume,
            description=spec.description or f"train {spec.variant}",
        )
        say(f"done: {result.steps} steps ({result.stopped_by}), {result.images_per_s:.1f} images/s", force=True)
        # a trainer that keeps something other than its last weights (the judge: the best validation accuracy)
        # says what to register
        model = trainer.final_model() if hasattr(trainer, "final_model") else model
        summary = result.as_dict()
        finals = {f"train.final_{k}": v for k, v in result.final.items() if v is not None}
        finals.update({f"val.final_{k.removeprefix('val_')}": v for k, v in result.val.items()})
        mlflow.log_metrics(
            {
                **finals,
                "train.skipped_steps": result.skipped_steps,
                "train.seconds": result.seconds,
                "train.images_per_s": result.images_per_s,
            }
        )
        mlflow.log_dict(summary, "training/result.json")
        version, model_id = ctx.tracking.log_model(
            model,
            name,
            spec.signature,
            tags={
                "emoflow.train_key": key,
                "emoflow.dataset": spec.data.dataset,
                "emoflow.data_version": spec.data.version,
            },
        )
    outcome = TrainOutcome(
        family=spec.family,
        variant=spec.variant,
        registered_model=name,
        model_version=str(version.version),
        model_id=str(model_id),
        run_id=run.info.run_id,
        train_key=key,
        data=spec.data,
        pixel_column=spec.pixel_column,
        checkpoint=str(folder / "last.pt"),
        result=summary,
        wall_seconds=round(time.monotonic() - started, 1),
    )
    outcome.save(done)
    return outcome


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _png_image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def record_evaluation(
    ctx: RunContext,
    trained: TrainOutcome,
    metrics: dict[str, float],
    figures: dict[str, bytes],
    score: Score,
    champion_score: Callable[[Any], float],
    confusion: dict[str, Any] | None = None,
    test_split: str | None = None,
) -> EvalOutcome:
    """Log an evaluation into the training run (metrics linked to the model and the test dataset, figures),
    then promote: the candidate becomes champion when its ``score`` beats the champion's on the same test split.
    ``champion_score(model)`` scores the champion's model on this split when it was last scored on another."""
    split_key = test_split or trained.data.split_key("test")
    name, version = trained.registered_model, trained.model_version
    tracking = ctx.tracking
    client = tracking.client()
    mlflow = tracking.mlflow()
    with mlflow.start_run(run_id=trained.run_id, log_system_metrics=False):
        test_dataset = log_splits(ctx, trained.data, {"test": "test"}, trained.pixel_column)["test"]
        for metric, value in metrics.items():
            if value is not None and math.isfinite(float(value)):
                mlflow.log_metric(
                    f"test.{metric}", float(value), model_id=trained.model_id or None, dataset=test_dataset
                )
    for figure, png in figures.items():
        client.log_image(trained.run_id, _png_image(png), artifact_file=f"evaluation/{figure}.png")
    client.log_dict(trained.run_id, {"metrics": metrics, "test_split": split_key}, "evaluation/metrics.json")
    if confusion is not None:
        client.log_dict(trained.run_id, confusion, "evaluation/confusion.json")

    candidate = float(metrics[score.metric])
    client.set_model_version_tag(name, version, "eval.test_split", split_key)
    client.set_model_version_tag(name, version, f"eval.{score.metric}", f"{candidate:.6f}")
    champion = tracking.version_by_alias(name, CHAMPION)
    champion_version = None if champion is None else str(champion.version)  # MLflow gives versions as int
    champion_value = None
    if champion is not None and champion_version != str(version):
        if champion.tags.get("eval.test_split") == split_key and champion.tags.get(f"eval.{score.metric}"):
            champion_value = float(champion.tags[f"eval.{score.metric}"])
        else:  # scored on another split: score it on this one, so the comparison is like for like
            champion_value = float(champion_score(tracking.load_model(f"models:/{name}@{CHAMPION}")))
    decision = decide(name, version, score, candidate, split_key, champion_version, champion_value)
    if decision.promoted:
        tracking.set_alias(name, CHAMPION, version)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, version, key, value)
    client.log_dict(trained.run_id, decision.as_dict(), "evaluation/promotion.json")
    ctx.logger.info(
        "%s v%s: %s (%s)", name, version, "champion" if decision.promoted else "stays candidate", decision.reason
    )
    return EvalOutcome(
        family=trained.family,
        variant=trained.variant,
        registered_model=name,
        model_version=version,
        run_id=trained.run_id,
        test_split=split_key,
        metrics=metrics,
        figures=figures,
        promotion=decision.as_dict(),
        confusion=confusion,
    )


def write_json(path: str | Path | None, obj: Any) -> None:
    """For DVC's metrics files and the CLI's --summary-out: sorted, indented, newline-terminated."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
