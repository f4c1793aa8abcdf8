"""Model assets, the same for every family: ``training_data`` (the dataset partition a model trains on, checked
and versioned), then per variant ``train_<variant>`` and ``evaluate_<variant>``, partitioned by dataset
(``emotionset``; ``mnist`` for the families that train on it), thin wrappers over the family's run functions
(``runs.families``); and the comparison assets of ``assets.scoreboard_assets``."""

from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetIn,
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

from assets.lineage import checked_shard_set
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
    """Every model asset has the same dataset partitions (a Dagster job's assets must share them); a family
    asked for a dataset it does not train on fails with that said (the judge has no MNIST model)."""
    return DATASET_PARTITIONS


def _require_dataset(family: Family, data: DatasetRef) -> None:
    if data.dataset not in family.datasets:
        raise Failure(f"{family.name} trains on {list(family.datasets)} only, not {data.dataset}")


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
        _require_dataset(family, data)
        outcome = family.train(
            run_context(settings, runtime, mlflow_tracking, context), variant, data, max_steps=config.max_steps
        )
        return Output(outcome, metadata=train_metadata(outcome), data_version=DataVersion(outcome.train_key))

    @asset(
        name=f"evaluate_{variant}",
        partitions_def=partitions,
        ins={"trained": AssetIn(f"train_{variant}"), "data": AssetIn("training_data")},
        deps=["evaluate_judge"] if family.needs_judge else None,  # refereed by the champion judge
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
        _require_dataset(family, data)
        outcome = family.evaluate(run_context(settings, runtime, mlflow_tracking, context), trained, data)
        return MaterializeResult(metadata=evaluation_metadata(outcome))

    return train_asset, evaluate_asset


def build_model_assets(
    settings: Params,
) -> tuple[list[AssetsDefinition], dict[str, tuple[AssetsDefinition, AssetsDefinition]]]:
    """(every model asset, {variant: (train asset, evaluate asset)})."""
    by_variant = {
        variant: build_variant_assets(settings, family, variant) for family, variant in all_variants(settings)
    }
    assets = [build_training_data(settings), *[a for pair in by_variant.values() for a in pair]]
    return assets, by_variant
