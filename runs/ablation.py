"""The BPLF paper's Table 3 regenerated from the scoreboard: rows the six flow variants, for each dataset two
columns — ``bpd_raw`` (bits/dim on the raw test pixels: the column the variants compare on) and ``bpd_input``
(on the pixels each model was trained on: SVD-truncated for the ``_svd`` variants, so those cells are lower
by construction and are never the comparison).

The EmotionSet columns are the scoreboard's rows; the MNIST columns score each variant's MNIST champion
(``emoflow-<variant>-mnist``) the same way on MNIST's test split. A variant without a model has empty cells.
"""

from __future__ import annotations

import io
from typing import Any

from flowmodels.scoring import dataset_bits_per_dim
from runs.context import RunContext
from runs.datasets import DatasetRef
from runs.registry import CHAMPION, registered_model_name

DATASET_COLUMNS = ("emotionset", "mnist")


def mnist_bits_per_dim(ctx: RunContext, variant: str, data: DatasetRef) -> tuple[float | None, float | None]:
    """(bpd_raw, bpd_input) of the variant's MNIST champion on MNIST's test split; (None, None) without one."""
    name = registered_model_name(variant, "mnist")
    if ctx.tracking.version_by_alias(name, CHAMPION) is None:
        return None, None
    model = ctx.tracking.load_model(f"models:/{name}@{CHAMPION}").eval()
    board, seed = ctx.settings.scoreboard, ctx.settings.evaluate.seed
    raw = dataset_bits_per_dim(model, data.load("test", "pixels"), board.batch_size, seed, ("standard",))["standard"]
    if model.pixel_column == "pixels":
        return raw, raw
    own = dataset_bits_per_dim(model, data.load("test", model.pixel_column), board.batch_size, seed, ("standard",))
    return raw, own["standard"]


def ablation_rows(ctx: RunContext, scoreboard_rows: list[dict[str, Any]], mnist: DatasetRef | None) -> list[dict]:
    by_variant = {row["variant"]: row for row in scoreboard_rows if row.get("family") == "flow"}
    rows = []
    for variant in ctx.settings.model.variants:
        board = by_variant.get(variant, {})
        row: dict[str, Any] = {
            "variant": variant,
            "emotionset_bpd_raw": board.get("bpd_raw"),
            "emotionset_bpd_input": board.get("bpd_input"),
            "emotionset_version": board.get("version"),
        }
        raw, own = mnist_bits_per_dim(ctx, variant, mnist) if mnist is not None else (None, None)
        row.update({"mnist_bpd_raw": raw, "mnist_bpd_input": own})
        rows.append(row)
    return rows


COLUMNS = ("emotionset_bpd_raw", "emotionset_bpd_input", "mnist_bpd_raw", "mnist_bpd_input")


def ablation_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    buffer.write("variant," + ",".join(COLUMNS) + "\n")
    for row in rows:
        buffer.write(row["variant"] + "," + ",".join("" if row[c] is None else f"{row[c]:.6f}" for c in COLUMNS) + "\n")
    return buffer.getvalue()


def ablation_markdown(rows: list[dict], test_split: str) -> str:
    lines = [
        "| method | EmotionSet bpd_raw | EmotionSet bpd_input | MNIST bpd_raw | MNIST bpd_input |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | " + " | ".join("—" if row[c] is None else f"{row[c]:.3f}" for c in COLUMNS) + " |"
        )
    lines += [
        "",
        f"bits/dim, 8 bits, standard convention, of log p(x | true label); EmotionSet: {test_split}; MNIST: its test "
        "split (32x32 zero-padded). bpd_raw: the raw test pixels (compare variants on this); bpd_input: the pixels "
        "the model was trained on (SVD-truncated for _svd: lower by construction).",
    ]
    return "\n".join(lines) + "\n"
