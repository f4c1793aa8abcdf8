"""The scoreboard: every registered model of every family, scored on the SAME test images.

One row per registered EmotionSet model (its champion; its newest version when it has none), columns:

- ``bpd_raw``: bits/dim of log p(x | true emotion) on the raw test pixels (8 bits, standard convention, the
  evaluation's fixed-seed dequantisation noise), for every density model, the ``_svd`` flows included;
  ``bpd_input``: the same on the pixels the model was trained on (SVD-truncated for ``_svd``);
- ``accuracy``: on the test split, for anything that classifies (the judge; Bayes' rule on a class-conditional
  flow with the training label frequencies as prior; the flow-latent classifier; a GAN's encoder), each on
  its own input pixels;
- ``label_agreement``: for conditional generators, the fraction of ``scoreboard.samples_per_class`` samples per
  emotion (fixed seed, stated temperature) that the champion judge classifies as the emotion asked for;
- ``frechet_judge_distance``: the Fréchet distance between the judge's penultimate features of those samples and
  of the real test faces (the judge plays Inception's part in FID), overall and per emotion (``fjd_<emotion>``,
  against the real test faces of that emotion; emotions with fewer than 2 test faces have none);
- what every number was computed against: ``shard_version``, ``test_split``, ``judge_version``.

A family says how its models are scored (``Family.scoreboard``: model, ``ScoreInputs`` -> the columns it fills);
a score that does not apply is None. Rows are cached under a content key (model version, shard version, judge
version, settings, this code), so a scoreboard after one new model scores only that model.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from flowmodels.data import ImageSet
from pipelines.labels import EMOTIONS
from pipelines.params import PROJECT_ROOT
from pipelines.versioning import tree_hash
from runs.context import RunContext
from runs.datasets import DatasetRef, key_of
from runs.registry import CHAMPION, registered_model_name
from scoring.frechet import frechet_distance

SCORE_COLUMNS = ("bpd_raw", "bpd_input", "accuracy", "label_agreement", "frechet_judge_distance")


def judge_model_name(data: DatasetRef) -> str:
    """The referee of a scoreboard on ``data``: the judge trained on the same sources (``emoflow-judge`` for the
    enabled ones; ``emoflow-judge-<sources>`` for a narrowed set)."""
    return registered_model_name("judge", "emotionset", data.sources)


MIN_FACES_PER_EMOTION = 2  # a Fréchet distance needs a covariance: at least two faces


@dataclass
class ScoreInputs:
    """What a family's scorer receives: the test split in both pixel columns (same rows, same order), the
    training label counts (priors), the champion judge and its features of the real test faces (None without
    a judge), and the settings."""

    ctx: RunContext
    test_raw: ImageSet
    test_svd: ImageSet
    train_labels: np.ndarray
    judge: Any | None
    real_features: np.ndarray | None
    progress: Callable[[str], None] = field(default=lambda stage: None)

    @property
    def settings(self):
        return self.ctx.settings.scoreboard

    def test_for(self, pixel_column: str) -> ImageSet:
        return self.test_svd if pixel_column == "pixels_svd" else self.test_raw


def generation_scores(
    inputs: ScoreInputs, sample: Callable[[int, int, int], torch.Tensor], emotions: Sequence[int] | None = None
) -> dict[str, float | None]:
    """label_agreement, frechet_judge_distance and their per-emotion values for a conditional generator.
    ``sample(emotion, n, seed) -> uint8 (n, C, H, W)`` for each of ``emotions`` (indices into EMOTIONS; default
    all seven: a generator of fewer classes, e.g. BiCoGAN's six, is scored on those it has); None everywhere
    without a judge."""
    from recognition.scoring import judge_features, predict_probabilities

    if inputs.judge is None:
        return {"label_agreement": None, "frechet_judge_distance": None}
    settings, judge = inputs.settings, inputs.judge
    flip = inputs.ctx.settings.judge.test_time_flip
    out: dict[str, float | None] = {}
    all_features, agreements = [], []
    real_labels = inputs.test_raw.labels.numpy()
    emotions = list(range(len(EMOTIONS)) if emotions is None else emotions)
    for emotion in emotions:
        name = EMOTIONS[emotion]
        images = sample(emotion, settings.samples_per_class, settings.seed + emotion)
        predicted = predict_probabilities(judge, images, settings.batch_size, flip).argmax(axis=1)
        agreement = float((predicted == emotion).mean())
        agreements.append(agreement)
        out[f"agreement_{name}"] = agreement
        features = judge_features(judge, images, settings.batch_size)
        all_features.append(features)
        real = inputs.real_features[real_labels == emotion]
        out[f"fjd_{name}"] = frechet_distance(features, real) if len(real) >= MIN_FACES_PER_EMOTION else None
        inputs.progress(f"samples of {name}")
    out["label_agreement"] = float(np.mean(agreements))
    # overall: every sample (the same number per emotion) against the real test faces of those emotions
    real = inputs.real_features[np.isin(real_labels, emotions)]
    out["frechet_judge_distance"] = frechet_distance(np.concatenate(all_features), real)
    return out


@torch.no_grad()
def seeded_flow_samples(model, emotion: int, n: int, seed: int, temperature: float) -> torch.Tensor:
    """uint8 samples of ``emotion`` from a model with ``sample(n, y, temperature)`` and ``to_uint8``, the noise
    drawn from ``seed`` alone (the same for every model of the same shapes)."""
    from training.seeds import seeded

    device = next(model.parameters()).device
    with seeded(seed, device):
        return model.to_uint8(model.sample(n, y=emotion, temperature=temperature)).cpu()


def scoreboard_code_version() -> str:
    return tree_hash([PROJECT_ROOT / "runs", PROJECT_ROOT / "scoring", PROJECT_ROOT / "recognition"])


@dataclass
class Scoreboard:
    rows: list[dict[str, Any]]
    shard_version: str
    test_split: str
    judge_version: str | None
    notes: list[str]

    def csv(self) -> str:
        columns = table_columns(self.rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        return buffer.getvalue()

    def markdown(self) -> str:
        head = ["model", "version", *SCORE_COLUMNS]
        lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(SCORE_COLUMNS)]
        for row in self.rows:
            cells = [row["model"], str(row["version"])] + [
                "—" if row.get(c) is None else f"{row[c]:.4f}" for c in SCORE_COLUMNS
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + [""] + [f"- {note}" for note in self.notes]) + "\n"

    def as_json(self) -> list[dict[str, Any]]:
        return self.rows


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    fixed = ["model", "family", "variant", "version", *SCORE_COLUMNS, "shard_version", "test_split", "judge_version"]
    extra = sorted({k for row in rows for k in row} - set(fixed))
    return fixed + extra


def _version_to_score(tracking, name: str):
    """The champion of ``name``, else its newest version; None when it is not registered."""
    champion = tracking.version_by_alias(name, CHAMPION)
    if champion is not None:
        return champion, CHAMPION
    from mlflow.exceptions import MlflowException

    try:
        versions = tracking.client().search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None, None
    if not versions:
        return None, None
    return max(versions, key=lambda v: int(v.version)), "newest"


def compute_scoreboard(ctx: RunContext, data: DatasetRef) -> Scoreboard:
    """Score every registered EmotionSet model of every family on ``data``'s test split (module docstring)."""
    from runs.families import all_variants

    if data.dataset != "emotionset":
        raise ValueError("the scoreboard scores EmotionSet models on the EmotionSet's test split")
    tracking, settings = ctx.tracking, ctx.settings
    test_split = data.split_key("test")
    test_raw, test_svd = data.load("test", "pixels"), data.load("test", "pixels_svd")
    if test_raw.ids != test_svd.ids:
        raise RuntimeError("the two pixel columns of the test split hold different rows")
    train_labels = data.load("train", "pixels").labels.numpy()
    notes = [
        f"test split {test_split}: {len(test_raw)} faces; bits/dim of log p(x | true emotion), 8 bits, standard "
        "convention, fixed-seed dequantisation noise",
        f"generators: {settings.scoreboard.samples_per_class} samples per emotion, seed {settings.scoreboard.seed}, "
        f"temperature {settings.scoreboard.temperature} (flows)",
        f"Bayes classifiers' prior: {settings.evaluate.class_prior} (training label frequencies unless 'uniform')",
    ]
    judge_version, judge, real_features = None, None, None
    notes.append(f"referee: the champion of {judge_model_name(data)}")
    judge_name = judge_model_name(data)
    judge_entry, which = _version_to_score(tracking, judge_name)
    if which == CHAMPION:
        from recognition.scoring import judge_features

        judge_version = str(judge_entry.version)
        judge = tracking.load_model(f"models:/{judge_name}@{CHAMPION}").eval()
        real_features = judge_features(judge, test_raw.images, settings.scoreboard.batch_size)
    else:
        notes.append(f"no champion {judge_name}: label_agreement and frechet_judge_distance are empty")
    progress = ctx.stage_progress("scoreboard")
    say = ctx.throttled("scoreboard")
    inputs = ScoreInputs(ctx, test_raw, test_svd, train_labels, judge, real_features, lambda stage: say(stage))
    candidates = [(f, v) for f, v in all_variants(settings) if f.scoreboard is not None]
    rows = []
    cache = ctx.home / "scoreboard" / "rows"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        for done, (family, variant) in enumerate(candidates, start=1):
            name = registered_model_name(variant, "emotionset", data.sources)
            entry, which = _version_to_score(tracking, name)
            progress(f"{name}", done - 1, len(candidates))
            if entry is None:
                continue
            key = key_of(
                {
                    "model": name,
                    "version": str(entry.version),
                    "test_split": test_split,
                    "judge": judge_version,
                    "settings": settings.scoreboard.model_dump(),
                    "prior": settings.evaluate.class_prior,
                    "flip": settings.judge.test_time_flip,
                    "code": scoreboard_code_version(),
                }
            )
            cached = cache / f"{key}.json"
            if cached.exists():
                rows.append(json.loads(cached.read_text()))
                continue
            model = tracking.load_model(f"models:/{name}/{entry.version}").eval()
            scores = family.scoreboard(model, inputs)
            row = {
                "model": name,
                "family": family.name,
                "variant": variant,
                "version": str(entry.version),
                "scored_version": which,
                **{c: None for c in SCORE_COLUMNS},
                **scores,
                "shard_version": data.version,
                "test_split": test_split,
                "judge_version": judge_version,
                "test_images": len(test_raw),
            }
            cached.write_text(json.dumps(row, indent=1, default=float))
            rows.append(row)
        progress("done", len(candidates), len(candidates))
    finally:
        progress.close()
    return Scoreboard(rows, data.version, test_split, judge_version, notes)


def record_scoreboard(ctx: RunContext, board: Scoreboard) -> dict[str, str]:
    """Write the scoreboard as CSV, JSON and Markdown under $EMOFLOW_HOME/scoreboard/ and log them (and every
    number as a metric) to an MLflow run "scoreboard". Returns {"csv": path, "json": path, "run_id": id}."""
    out = ctx.home / "scoreboard"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scoreboard.csv").write_text(board.csv())
    (out / "scoreboard.json").write_text(json.dumps(board.as_json(), indent=2, default=float) + "\n")
    (out / "scoreboard.md").write_text(board.markdown())
    with ctx.tracking.start_run(
        run_name="scoreboard",
        tags={**ctx.tags, "emoflow.kind": "scoreboard", "emoflow.shard_version": board.shard_version},
        system_metrics=False,
    ) as run:
        mlflow = ctx.tracking.mlflow()
        mlflow.log_text(board.csv(), "scoreboard/scoreboard.csv")
        mlflow.log_text(board.markdown(), "scoreboard/scoreboard.md")
        mlflow.log_dict({"rows": board.rows, "notes": board.notes}, "scoreboard/scoreboard.json")
        mlflow.log_params(
            {"shard_version": board.shard_version, "test_split": board.test_split, "judge_version": board.judge_version}
        )
        mlflow.log_metrics(
            {  # MLflow metric names refuse "+" (models of several sources: emoflow-judge-ckplus+jaffe)
                f"{row['model'].replace('+', '_')}.{c}": float(row[c])
                for row in board.rows
                for c in SCORE_COLUMNS
                if row.get(c) is not None and np.isfinite(float(row[c]))
            }
        )
    return {"csv": str(out / "scoreboard.csv"), "json": str(out / "scoreboard.json"), "run_id": run.info.run_id}
