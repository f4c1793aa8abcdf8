"""Model assets, the same for every family: ``training_data`` (the dataset partition a model trains on, checked
and versioned), then per variant ``train_<variant>`` and ``evaluate_<variant>``, partitioned by dataset
(``emotionset``; ``mnist`` for the families that train on it), thin wrappers over the family's run functions
(``runs.families``); and ``ablation_table`` (the BPLF paper's Table 3)."""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
    StaticPartitionsDefinition,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.lineage import checked_shard_set, latest_partition_metadata
from assets.pictures import png_metadata
from assets.resources import EmoflowRuntime, MlflowTracking
from pipelines.params import Params
from runs.context import RunContext
from runs.datasets import DATASETS, DatasetRef, enabled_sources_ref, mnist_ref
from runs.families import Family, all_variants
from runs.outcomes import EvalOutcome, TrainOutcome

DATASET_PARTITIONS = StaticPartitionsDefinition(list(DATASETS))


class TrainingDataConfig(Config):
    """Per-run knob: a shard set (or shards root) to train on instead of the latest validated emotionset_shards."""

    shards: str | None = None


class TrainRunConfig(Config):
    """Per-run knob: a step budget instead of the settings' (quick runs: `emoflow run --max-steps`)."""

    max_steps: int | None = None


def run_context(
    settings: Params, runtime: EmoflowRuntime, tracking: MlflowTracking, context: AssetExecutionContext
) -> RunContext:
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset": context.asset_key.to_user_string()}
    if context.has_partition_key:
        tags["dagster.partition"] = context.partition_key
    return RunContext(
        settings, runtime.home_path(), tracking.tracking(), runtime.progress_bars, tags, logger=context.log
    )


def _partitions(family: Family) -> StaticPartitionsDefinition:
    return (
        DATASET_PARTITIONS if tuple(family.datasets) == DATASETS else StaticPartitionsDefinition(list(family.datasets))
    )


def build_training_data(settings: Params) -> AssetsDefinition:
    @asset(
        partitions_def=DATASET_PARTITIONS,
        deps=["emotionset_shards", "mnist_digits"],
        group_name="training",
        kinds={"python"},
        description="The data a model trains on: the latest EmotionSet shard set whose blocking checks passed (narrowed to "
        "params data.sources), or MNIST; its version and row counts.",
    )
    def training_data(
        context: AssetExecutionContext, config: TrainingDataConfig, runtime: EmoflowRuntime
    ) -> Output[DatasetRef]:
        if context.partition_key == "mnist":
            ref = mnist_ref(settings)
        else:
            if config.shards:
                shards = Path(config.shards)
            else:
                shards = checked_shard_set(context.instance).path
            try:
                ref = enabled_sources_ref(settings, shards)
            except ValueError as error:
                raise Failure(str(error)) from error
        rows = {split: len(ref.load(split).labels) for split in ("train", "val", "test")}
        schema = TableSchema(columns=[TableColumn("split", "string"), TableColumn("images", "int")])
        return Output(
            ref,
            metadata={
                "dataset": ref.dataset,
                "version": ref.version,
                "path": MetadataValue.path(ref.path),
                "sources": MetadataValue.json(list(ref.sources) if ref.sources else None),
                "image_shape": MetadataValue.json(list(ref.image_shape)),
                "images": MetadataValue.table(
                    [TableRecord({"split": k, "images": v}) for k, v in rows.items()], schema=schema
                ),
            },
            data_version=DataVersion(f"{ref.version}:{'+'.join(ref.sources or ())}"),
        )

    return training_data


def train_metadata(outcome: TrainOutcome) -> dict:
    result = outcome.result
    history = result["history"][:: max(1, len(result["history"]) // 20)]
    losses = [
        k
        for k in (history[0] if history else {})
        if k not in ("step", "elapsed", "epoch", "skipped_steps", "images_per_s", "lr")
    ]
    schema = TableSchema(columns=[TableColumn("step", "int"), *[TableColumn(k, "float") for k in losses]])
    curve = MetadataValue.table(
        [TableRecord({"step": h["step"], **{k: h.get(k) for k in losses}}) for h in history], schema=schema
    )
    return {
        "reused": outcome.reused,
        "registered_model": outcome.registered_model,
        "model_version": outcome.model_version,
        "mlflow_run_id": outcome.run_id,
        "train_key": outcome.train_key,
        "data_version": outcome.data.version,
        "steps": result["steps"],
        "stopped_by": result["stopped_by"],
        **{f"train_{k}": v for k, v in result["final"].items()},
        **{k: v for k, v in result["val"].items()},
        "images_per_s": float(result["images_per_s"]),
        "skipped_steps": result["skipped_steps"],
        "resumed_from_step": result["resumed_from_step"],  # None: started from scratch
        "device": result["device"],
        "history": curve,
        "checkpoint": MetadataValue.path(outcome.checkpoint),
    }


def evaluation_metadata(outcome: EvalOutcome) -> dict:
    promotion = outcome.promotion
    metadata = {
        **{k if k.startswith("test_") else f"test_{k}": float(v) for k, v in outcome.metrics.items()},
        "registered_model": outcome.registered_model,
        "model_version": outcome.model_version,
        "mlflow_run_id": outcome.run_id,
        "test_split": outcome.test_split,
        "promoted": outcome.promoted,
        "promotion": promotion["reason"],
        "champion_version_before": promotion["champion_version"],  # None when there was none
    }
    for figure, png in outcome.figures.items():
        metadata[f"figure_{figure}"] = png_metadata(png, figure.replace("_", " "))
    return metadata


def build_variant_assets(settings: Params, family: Family, variant: str) -> tuple[AssetsDefinition, AssetsDefinition]:
    partitions = _partitions(family)
    code = family.code_version()

    @asset(
        name=f"train_{variant}",
        partitions_def=partitions,
        ins={"data": AssetIn("training_data")},
        group_name="training",
        kinds={"pytorch", "mlflow"},
        code_version=code,
        description=f"Train {variant} ({family.name}) on the partition's dataset, resuming an interrupted run; log it to "
        "MLflow and register it with alias 'candidate'. Nothing is trained when nothing that shapes the model changed.",
    )
    def train_asset(
        context: AssetExecutionContext,
        config: TrainRunConfig,
        runtime: EmoflowRuntime,
        mlflow_tracking: MlflowTracking,
        data: DatasetRef,
    ) -> Output[TrainOutcome]:
        outcome = family.train(
            run_context(settings, runtime, mlflow_tracking, context), variant, data, max_steps=config.max_steps
        )
        return Output(outcome, metadata=train_metadata(outcome), data_version=DataVersion(outcome.train_key))

    @asset(
        name=f"evaluate_{variant}",
        partitions_def=partitions,
        ins={"trained": AssetIn(f"train_{variant}"), "data": AssetIn("training_data")},
        group_name="evaluation",
        kinds={"pytorch", "mlflow"},
        code_version=code,
        description=f"Score the {variant} candidate on the test split and promote it to 'champion' when its "
        f"{family.score} beats the champion's on the same test split.",
    )
    def evaluate_asset(
        context: AssetExecutionContext,
        runtime: EmoflowRuntime,
        mlflow_tracking: MlflowTracking,
        trained: TrainOutcome,
        data: DatasetRef,
    ) -> MaterializeResult:
        outcome = family.evaluate(run_context(settings, runtime, mlflow_tracking, context), trained, data)
        return MaterializeResult(metadata=evaluation_metadata(outcome))

    return train_asset, evaluate_asset


def build_ablation_table(settings: Params, evaluate_assets: list[AssetsDefinition]) -> AssetsDefinition:
    variants = tuple(settings.model.variants)

    @asset(
        deps=evaluate_assets,
        group_name="evaluation",
        kinds={"mlflow"},
        description="The BPLF paper's Table 3 regenerated: rows the variants, columns the datasets, cells test bits/dim.",
    )
    def ablation_table(
        context: AssetExecutionContext, runtime: EmoflowRuntime, mlflow_tracking: MlflowTracking
    ) -> MaterializeResult:
        rows = []
        for variant in variants:
            row = {"variant": variant}
            for dataset in DATASETS:
                meta = latest_partition_metadata(context.instance, AssetKey(f"evaluate_{variant}"), dataset)
                row[dataset] = None if meta is None else float(meta["test_bpd"])
            rows.append(row)
        header = "| method | " + " | ".join(f"{d} (bits/dim)" for d in DATASETS) + " |"
        lines = [header, "|---|" + "---:|" * len(DATASETS)]
        for row in rows:
            lines.append(
                f"| {row['variant']} | "
                + " | ".join("—" if row[d] is None else f"{row[d]:.3f}" for d in DATASETS)
                + " |"
            )
        markdown = "\n".join(lines)
        csv = (
            "variant,"
            + ",".join(DATASETS)
            + "\n"
            + "\n".join(
                row["variant"] + "," + ",".join("" if row[d] is None else f"{row[d]:.6f}" for d in DATASETS)
                for row in rows
            )
            + "\n"
        )
        out_dir = runtime.home_path() / "ablation"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "table3.csv").write_text(csv)
        tracking = mlflow_tracking.tracking()
        with tracking.start_run(
            run_name="ablation table 3",
            tags={"dagster.run_id": context.run.run_id, "emoflow.kind": "ablation"},
            system_metrics=False,
        ):
            mlflow = tracking.mlflow()
            mlflow.log_text(csv, "ablation/table3.csv")
            mlflow.log_text(markdown, "ablation/table3.md")
            mlflow.log_metrics(
                {f"table3.{row['variant']}.{d}": row[d] for row in rows for d in DATASETS if row[d] is not None}
            )
        schema = TableSchema(
            columns=[
                TableColumn("variant", "string"),
                *[TableColumn(d, "float", description="test bits/dim") for d in DATASETS],
            ]
        )
        return MaterializeResult(
            metadata={
                # empty cells: None (not evaluated on that dataset yet)
                "table": MetadataValue.table([TableRecord(row) for row in rows], schema=schema),
                "csv": MetadataValue.path(str(out_dir / "table3.csv")),
                "cells_filled": sum(row[d] is not None for row in rows for d in DATASETS),
            }
        )

    return ablation_table


def build_model_assets(
    settings: Params,
) -> tuple[list[AssetsDefinition], dict[str, tuple[AssetsDefinition, AssetsDefinition]]]:
    """(every model asset, {variant: (train asset, evaluate asset)})."""
    by_variant = {
        variant: build_variant_assets(settings, family, variant) for family, variant in all_variants(settings)
    }
    flow_evaluations = [by_variant[v][1] for v in settings.model.variants]
    assets = [
        build_training_data(settings),
        *[a for pair in by_variant.values() for a in pair],
        build_ablation_table(settings, flow_evaluations),
    ]
    return assets, by_variant
