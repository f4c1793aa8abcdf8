"""The flow-density audit: every face's bits/dim under a trained flow, to find the faces a model finds least
likely (mislabelled, broken, not a face of the expected kind) — the audit no peer tool runs.

``density_audit(ctx, data)`` scores the champion of ``evaluate.density_audit.variant`` (or a given model) on the
splits in ``evaluate.density_audit.splits``, and writes to ``<home>/audit/density/<variant>/<shard version>/``:

* ``scores.parquet``: id, source, split, label_name, bits_per_dim, rank (1 = least likely over all scored
  faces), percentile — the file ``data.audit.density_outliers.scores_file`` takes for the opt-in quarantine;
* ``distributions.png``: bits/dim per source and per label (box plots);
* ``least_likely_<source>.png``: that source's N least likely faces with their ids, labels and bits/dim;
* ``report.json``: the figures, and the ranks of the known-bad rows when some are named.

The same files go to MLflow (one run, ``emoflow.kind=density_audit``) with per-split/per-source mean bits/dim.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from figures import distributions_png, strip_png
from flowmodels.scoring import per_image_bits_per_dim
from flowmodels.variants import pixel_column
from pipelines.labels import EMOTIONS
from runs.context import RunContext
from runs.datasets import DatasetRef
from runs.registry import CHAMPION, registered_model_name

SCORES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("bits_per_dim", pa.float64(), nullable=False),
        pa.field("rank", pa.int64(), nullable=False),  # 1 = the least likely face scored
        pa.field("percentile", pa.float64(), nullable=False),  # share of scored faces at least as likely, 0..100
    ]
)


@dataclass
class DensityAuditOutcome:
    variant: str
    model_uri: str
    shard_version: str
    out_dir: Path
    report: dict[str, Any]
    figures: dict[str, bytes] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def scores_file(self) -> Path:
        return self.out_dir / "scores.parquet"


def source_of(row_id: str) -> str:
    """A shard row's source: its id is ``<source>-<16 hex>`` (pipelines.prepare.row_id)."""
    return row_id.rsplit("-", 1)[0]


def rank_scores(ids: list[str], splits: list[str], labels: np.ndarray, bpd: np.ndarray) -> pa.Table:
    """The scores table, least likely first (highest bits/dim; ties by id, so the order is deterministic)."""
    ids_array = np.asarray(ids, dtype=object)
    order = np.lexsort((ids_array.astype(str), -bpd))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(1, len(ids) + 1)
    n = max(len(ids), 1)
    table = pa.table(
        {
            "id": ids_array[order].tolist(),
            "source": [source_of(i) for i in ids_array[order]],
            "split": np.asarray(splits, dtype=object)[order].tolist(),
            "label_name": [EMOTIONS[int(v)] for v in labels[order]],
            "bits_per_dim": bpd[order],
            "rank": rank[order],
            "percentile": 100.0 * (n - rank[order] + 1) / n,
        }
    )
    return table.cast(SCORES_SCHEMA)


def _strips(frame, faces: dict[str, np.ndarray], least: int, variant: str, version: str) -> dict[str, bytes]:
    """Per source, its ``least`` least likely faces (``frame``: the scores table as pandas, least likely first)."""
    strips = {}
    for source, rows in frame.groupby("source", sort=True):
        top = rows.head(least)
        captions = [f"{r.id[-6:]}\n{r.label_name}\n{r.bits_per_dim:.2f}" for r in top.itertuples()]
        strips[f"least_likely_{source}"] = strip_png(
            np.stack([faces[i] for i in top.id]),
            captions,
            f"{source}: the {len(top)} least likely faces under {variant} (bits/dim, shards {version})",
        )
    return strips


def density_audit(
    ctx: RunContext,
    data: DatasetRef,
    model=None,
    model_uri: str | None = None,
    known_bad: Sequence[str] = (),
    variant: str | None = None,
) -> DensityAuditOutcome:
    """Score every face of the audited splits; see the module docstring. ``variant``: the flow variant (default
    params evaluate.density_audit.variant; it decides the pixel column); ``model``: a loaded flow of it (else the
    one at ``model_uri``, default the variant's champion)."""
    settings = ctx.settings.evaluate
    audit = settings.density_audit
    variant = variant or audit.variant
    uri = model_uri or f"models:/{registered_model_name(variant)}@{CHAMPION}"
    if model is None:
        try:
            model = ctx.tracking.load_model(uri)
        except Exception as error:  # noqa: BLE001 - MLflow raises several types for a missing model
            raise RuntimeError(f"no model at {uri}: train and evaluate {variant} first ({error})") from error
    model.eval()
    column = pixel_column(variant)
    ids: list[str] = []
    splits: list[str] = []
    labels, scores, faces = [], [], {}
    progress = ctx.stage_progress(f"density audit {variant}")
    try:
        for split in audit.splits:
            images = data.load(split, column)

            def report(done: int, total: int, split: str = split) -> None:
                progress(f"bits/dim {split}", done, total)

            scores.append(per_image_bits_per_dim(model, images, settings.batch_size, settings.seed, report))
            ids.extend(images.ids or [])
            splits.extend([split] * len(images))
            labels.append(images.labels.numpy())
            faces.update(zip(images.ids or [], images.images[:, 0].numpy()))
    finally:
        progress.close()
    bpd = np.concatenate(scores) if scores else np.zeros(0)
    table = rank_scores(ids, splits, np.concatenate(labels) if labels else np.zeros(0, int), bpd)
    frame = table.to_pandas()
    version = data.version
    title = f"bits/dim under {variant} ({uri}), shards {version}, splits {'+'.join(audit.splits)}, 8 bits, standard"
    figures = {
        "distributions": distributions_png(
            [
                ("by source", {s: g.bits_per_dim.to_numpy() for s, g in frame.groupby("source", sort=True)}),
                ("by label", {e: frame.bits_per_dim[frame.label_name == e].to_numpy() for e in EMOTIONS}),
            ],
            "bits/dim (standard convention)",
            title,
        ),
        **_strips(frame, faces, audit.least_likely, variant, version),
    }
    columns = ["id", "source", "split", "label_name", "bits_per_dim", "rank"]
    by_id = dict(zip(frame.id, zip(frame["rank"], frame.percentile, frame.bits_per_dim)))
    report = {
        "variant": variant,
        "model_uri": uri,
        "shard_version": version,
        "splits": list(audit.splits),
        "convention": "standard, 8 bits, fixed-seed dequantisation noise (evaluate.seed)",
        "faces": len(frame),
        "mean_bits_per_dim": {
            f"{split}.{source}": float(g.bits_per_dim.mean())
            for (split, source), g in frame.groupby(["split", "source"])
        },
        "least_likely": frame.head(audit.least_likely)[columns].to_dict("records"),
        "least_likely_by_source": {
            source: rows.head(audit.least_likely)[columns].to_dict("records")
            for source, rows in frame.groupby("source", sort=True)
        },
        "known_bad": {
            i: (
                {"rank": int(by_id[i][0]), "percentile": float(by_id[i][1]), "bits_per_dim": float(by_id[i][2])}
                if i in by_id
                else None
            )
            for i in known_bad
        },
    }
    out_dir = ctx.home / "audit" / "density" / variant / version
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / "scores.parquet")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, png in figures.items():
        (out_dir / f"{name}.png").write_bytes(png)
    run_id = _track(ctx, report, out_dir)
    return DensityAuditOutcome(variant, uri, version, out_dir, report, figures, run_id)


def _track(ctx: RunContext, report: dict[str, Any], out_dir: Path) -> str:
    tracking = ctx.tracking
    tags = {
        **ctx.tags,
        "emoflow.kind": "density_audit",
        "emoflow.variant": report["variant"],
        "emoflow.model_uri": report["model_uri"],
        "emoflow.shard_version": report["shard_version"],
    }
    with tracking.start_run(f"density audit {report['variant']}", tags, system_metrics=False) as run:
        mlflow = tracking.mlflow()
        mlflow.log_metrics({f"density.{k}": v for k, v in report["mean_bits_per_dim"].items()})
        mlflow.log_artifacts(str(out_dir), "density_audit")
        return run.info.run_id
