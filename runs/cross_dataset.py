"""The cross-dataset matrix: models trained on one source alone, tested on every source's test split.

Rows: the source a model was trained on; columns: the source whose test split it is scored on (the diagonal is
within-dataset). Three matrices by default: the judge's accuracy, the flow-latent classifier's accuracy, and
``bpd_raw`` of one flow variant (``scoreboard.cross_dataset_flow``; its Bayes-rule accuracy comes for free and
is kept too). Each single-source model is trained through its family's ``train`` (tracked, registered as
``emoflow-<variant>-<source>``, reused when nothing changed) for ``scoreboard.cross_dataset_max_steps`` steps,
and scored by the family's scoreboard scorer, so every cell means what the scoreboard's column means.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from figures import matrix_png
from runs.context import RunContext
from runs.datasets import DatasetRef
from runs.families import family_of
from runs.scoreboard import ScoreInputs


@dataclass
class CrossDatasetMatrix:
    sources: list[str]
    shard_version: str
    values: dict[str, np.ndarray] = field(default_factory=dict)  # "<variant> <metric>" -> (train, test) matrix
    models: dict[str, dict[str, str]] = field(default_factory=dict)  # "<variant>" -> train source -> "name vN"
    test_images: dict[str, int] = field(default_factory=dict)

    def csv(self, what: str) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["trained_on", *self.sources])
        for i, source in enumerate(self.sources):
            writer.writerow([source, *["" if not np.isfinite(v) else f"{v:.6f}" for v in self.values[what][i]]])
        return buffer.getvalue()

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "shard_version": self.shard_version,
            "test_images": self.test_images,
            "models": self.models,
            "matrices": {
                k: [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
                for k, m in self.values.items()
            },
        }

    def figures(self) -> dict[str, bytes]:
        out = {}
        for what, matrix in self.values.items():
            metric = what.split(" ")[-1]
            fmt = "{:.2f}" if metric == "accuracy" else "{:.3f}"
            out[what.replace(" ", "_")] = matrix_png(
                matrix,
                self.sources,
                self.sources,
                f"{what}: trained on one source, tested on each ({self.shard_version})",
                metric,
                fmt,
            )
        return out


def matrix_entries(ctx: RunContext) -> list[tuple[str, str]]:
    """(variant, metric) of each matrix: the judge's and the flow-latent classifier's accuracy, one flow's
    bits/dim and accuracy."""
    flow = ctx.settings.scoreboard.cross_dataset_flow
    return [("judge", "accuracy"), ("flow_latent_classifier", "accuracy"), (flow, "bpd_raw"), (flow, "accuracy")]


def cross_dataset_matrix(ctx: RunContext, data: DatasetRef) -> CrossDatasetMatrix:
    settings = ctx.settings
    present = set(json.loads((Path(data.path) / "manifest.json").read_text())["by_source"])
    enabled = set(data.sources) if data.sources else present
    sources = [s for s in settings.scoreboard.cross_dataset_sources if s in present and s in enabled]
    if len(sources) < 2:
        raise ValueError(f"the cross-dataset matrix needs two sources or more among {sorted(present & enabled)}")
    result = CrossDatasetMatrix(sources, data.version)
    refs = {s: data.narrowed((s,)) for s in sources}
    tests = {s: (refs[s].load("test", "pixels"), refs[s].load("test", "pixels_svd")) for s in sources}
    result.test_images = {s: len(tests[s][0]) for s in sources}
    entries = matrix_entries(ctx)
    variants = list(dict.fromkeys(v for v, _ in entries))
    progress = ctx.stage_progress("cross-dataset matrix")
    total, done = len(variants) * len(sources), 0
    try:
        for variant in variants:
            family = family_of(variant, settings)
            metrics = [m for v, m in entries if v == variant]
            for m in metrics:
                result.values[f"{variant} {m}"] = np.full((len(sources), len(sources)), np.nan)
            result.models[variant] = {}
            for i, train_source in enumerate(sources):
                ref = refs[train_source]
                trained = family.train(ctx, variant, ref, max_steps=settings.scoreboard.cross_dataset_max_steps)
                result.models[variant][train_source] = f"{trained.registered_model} v{trained.model_version}"
                model = ctx.tracking.load_model(f"models:/{trained.registered_model}/{trained.model_version}").eval()
                train_labels = ref.load("train", "pixels").labels.numpy()
                for j, test_source in enumerate(sources):
                    raw, svd = tests[test_source]
                    if not len(raw):
                        continue
                    scores = family.scoreboard(model, ScoreInputs(ctx, raw, svd, train_labels, None, None))
                    for m in metrics:
                        if scores.get(m) is not None:
                            result.values[f"{variant} {m}"][i, j] = float(scores[m])
                done += 1
                progress(f"{variant} trained on {train_source}", done, total)
    finally:
        progress.close()
    return result


def record_cross_dataset(ctx: RunContext, matrix: CrossDatasetMatrix) -> dict[str, Any]:
    """CSV per matrix and heat-map PNGs under $EMOFLOW_HOME/cross_dataset/, and an MLflow run with them."""
    out = ctx.home / "cross_dataset"
    out.mkdir(parents=True, exist_ok=True)
    figures = matrix.figures()
    for what in matrix.values:
        (out / f"{what.replace(' ', '_')}.csv").write_text(matrix.csv(what))
    for name, png in figures.items():
        (out / f"{name}.png").write_bytes(png)
    (out / "matrix.json").write_text(json.dumps(matrix.as_dict(), indent=2) + "\n")
    with ctx.tracking.start_run(
        run_name="cross-dataset matrix",
        tags={**ctx.tags, "emoflow.kind": "cross_dataset", "emoflow.shard_version": matrix.shard_version},
        system_metrics=False,
    ) as run:
        mlflow = ctx.tracking.mlflow()
        for what in matrix.values:
            mlflow.log_text(matrix.csv(what), f"cross_dataset/{what.replace(' ', '_')}.csv")
        mlflow.log_dict(matrix.as_dict(), "cross_dataset/matrix.json")
        for name, png in figures.items():
            from PIL import Image

            mlflow.log_image(Image.open(io.BytesIO(png)), f"cross_dataset/{name}.png")
    return {"dir": str(out), "run_id": run.info.run_id, "figures": figures}
