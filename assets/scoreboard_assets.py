"""The comparison assets: ``scoreboard`` (every model on the same test images), ``ablation_table`` (BPLF Table 3
from the scoreboard, raw and input pixels side by side) and ``cross_dataset_matrix`` (one source in, every
source out). Thin: the work is in ``runs.scoreboard``, ``runs.ablation`` and ``runs.cross_dataset``."""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.lineage import checked_shard_set
from assets.model_assets import run_context
from assets.pictures import png_metadata
from assets.resources import EmoflowRuntime, MlflowTracking
from pipelines.params import Params
from runs.datasets import enabled_sources_ref, mnist_ref

TEXT_COLUMNS = (
    "model",
    "family",
    "variant",
    "version",
    "shard_version",
    "test_split",
    "judge_version",
    "scored_version",
)


def _table(rows: list[dict], columns: list[str]) -> MetadataValue:
    """A Dagster table of ``rows``; None stays None (a score that does not apply)."""
    schema = TableSchema(columns=[TableColumn(c, "string" if c in TEXT_COLUMNS else "float") for c in columns])
    return MetadataValue.table([TableRecord({c: row.get(c) for c in columns}) for row in rows], schema=schema)


def _emotionset(settings: Params, context: AssetExecutionContext):
    try:
        return enabled_sources_ref(settings, checked_shard_set(context.instance).path)
    except ValueError as error:
        raise Failure(str(error)) from error


def build_scoreboard_assets(settings: Params, evaluate_assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    from runs.scoreboard import SCORE_COLUMNS

    @asset(
        deps=evaluate_assets,
        group_name="evaluation",
        kinds={"pytorch", "mlflow"},
        description="Every registered model of every family (champion, else newest version) scored on the same "
        "EmotionSet test images: bpd_raw, bpd_input, accuracy, label_agreement and frechet_judge_distance (the "
        "champion judge as referee), with the shard version, test split and judge version.",
    )
    def scoreboard(
        context: AssetExecutionContext, runtime: EmoflowRuntime, mlflow_tracking: MlflowTracking
    ) -> MaterializeResult:
        from runs.scoreboard import compute_scoreboard, record_scoreboard

        ctx = run_context(settings, runtime, mlflow_tracking, context)
        board = compute_scoreboard(ctx, _emotionset(settings, context))
        written = record_scoreboard(ctx, board)
        columns = ["model", "version", *SCORE_COLUMNS, "judge_version"]
        return MaterializeResult(
            metadata={
                "table": _table(board.rows, columns),
                "rows": len(board.rows),
                "shard_version": board.shard_version,
                "test_split": board.test_split,
                "judge_version": board.judge_version,
                "notes": MetadataValue.md("\n".join(f"- {n}" for n in board.notes)),
                "csv": MetadataValue.path(written["csv"]),
                "mlflow_run_id": written["run_id"],
            }
        )

    @asset(
        deps=[scoreboard, "mnist_digits", *evaluate_assets],  # MNIST columns: the MNIST partitions' champions
        group_name="evaluation",
        kinds={"mlflow"},
        description="The BPLF paper's Table 3 regenerated from the scoreboard: the six flow variants' bits/dim on "
        "the raw test pixels (bpd_raw, the comparison) with bpd_input (the pixels each was trained on) beside, "
        "EmotionSet and MNIST.",
    )
    def ablation_table(
        context: AssetExecutionContext, runtime: EmoflowRuntime, mlflow_tracking: MlflowTracking
    ) -> MaterializeResult:
        import json

        from runs.ablation import COLUMNS, ablation_csv, ablation_markdown, ablation_rows

        ctx = run_context(settings, runtime, mlflow_tracking, context)
        board_file = ctx.home / "scoreboard" / "scoreboard.json"
        board_rows = json.loads(board_file.read_text()) if board_file.exists() else []
        test_split = board_rows[0]["test_split"] if board_rows else "none scored"
        mnist = mnist_ref(settings) if settings.mnist.root_path().is_dir() else None
        rows = ablation_rows(ctx, board_rows, mnist)
        csv, markdown = ablation_csv(rows), ablation_markdown(rows, test_split)
        out = ctx.home / "ablation"
        out.mkdir(parents=True, exist_ok=True)
        (out / "table3.csv").write_text(csv)
        (out / "table3.md").write_text(markdown)
        with ctx.tracking.start_run(
            run_name="ablation table 3", tags={**ctx.tags, "emoflow.kind": "ablation"}, system_metrics=False
        ):
            mlflow = ctx.tracking.mlflow()
            mlflow.log_text(csv, "ablation/table3.csv")
            mlflow.log_text(markdown, "ablation/table3.md")
            mlflow.log_metrics(
                {f"table3.{row['variant']}.{c}": row[c] for row in rows for c in COLUMNS if row[c] is not None}
            )
        return MaterializeResult(
            metadata={
                "table": _table(rows, ["variant", *COLUMNS]),
                "csv": MetadataValue.path(str(out / "table3.csv")),
                "test_split": test_split,
                "cells_filled": sum(row[c] is not None for row in rows for c in COLUMNS),
            }
        )

    @asset(
        deps=["emotionset_shards"],
        group_name="evaluation",
        kinds={"pytorch", "mlflow"},
        description="The judge, the flow-latent classifier and one flow trained on each source alone and tested on "
        "every source's test split: accuracy and bpd_raw matrices as heat-maps (params scoreboard.cross_dataset_*).",
    )
    def cross_dataset_matrix(
        context: AssetExecutionContext, runtime: EmoflowRuntime, mlflow_tracking: MlflowTracking
    ) -> MaterializeResult:
        from runs.cross_dataset import cross_dataset_matrix as compute
        from runs.cross_dataset import record_cross_dataset

        ctx = run_context(settings, runtime, mlflow_tracking, context)
        try:
            matrix = compute(ctx, _emotionset(settings, context))
        except ValueError as error:
            raise Failure(str(error)) from error
        written = record_cross_dataset(ctx, matrix)
        metadata = {
            "sources": MetadataValue.json(matrix.sources),
            "shard_version": matrix.shard_version,
            "test_images": MetadataValue.json(matrix.test_images),
            "models": MetadataValue.json(matrix.models),
            "mlflow_run_id": written["run_id"],
            "dir": MetadataValue.path(written["dir"]),
        }
        for what, values in matrix.values.items():
            rows = [
                {"trained_on": s, **{t: (None if v != v else float(v)) for t, v in zip(matrix.sources, values[i])}}
                for i, s in enumerate(matrix.sources)
            ]
            schema = TableSchema(
                columns=[TableColumn("trained_on", "string"), *[TableColumn(t, "float") for t in matrix.sources]]
            )
            metadata[what.replace(" ", "_")] = MetadataValue.table([TableRecord(r) for r in rows], schema=schema)
        for name, png in written["figures"].items():
            metadata[f"figure_{name}"] = png_metadata(png, name.replace("_", " "))
        return MaterializeResult(metadata=metadata)

    return [scoreboard, ablation_table, cross_dataset_matrix]
