"""``nfgan_pairs``: NFGAN's (expressive, neutral) pairs of the latest checked shard set (``pipelines.pairs``), written
to ``$EMOFLOW_HOME/nfgan_pairs/<shard version>/pairs.parquet``, with their counts by source and split. Thin: the
pairing is ``pipelines.pairs.neutral_pairs``; ``train_nfgan`` builds the same pairs itself from the same shards."""

from pathlib import Path

import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.lineage import checked_shard_set
from assets.resources import EmoflowRuntime
from pipelines.params import Params
from runs.datasets import enabled_sources_ref


class NfganPairsConfig(Config):
    """Per-run knob: a shard set (or shards root) to pair instead of the latest validated emotionset_shards."""

    shards: str | None = None


COUNT_COLUMNS = ("pairs", "inputs", "targets", "subjects")


def build_nfgan_assets(settings: Params) -> list[AssetsDefinition]:
    @asset(
        deps=["emotionset_shards"],
        group_name="training",
        kinds={"python"},
        description="NFGAN's training pairs: every expressive face with the neutral faces of the same person in its split "
        "(JAFFE, CK+ original layout, MMI; CK+48 and FER2013 give none), counted by source and split.",
    )
    def nfgan_pairs(context: AssetExecutionContext, config: NfganPairsConfig, runtime: EmoflowRuntime) -> Output[str]:
        from pipelines.pairs import neutral_pairs

        shards = Path(config.shards) if config.shards else checked_shard_set(context.instance).path
        try:
            ref = enabled_sources_ref(settings, shards)
            pairs = neutral_pairs(ref.path, ref.sources)
        except ValueError as error:  # no enabled source in the shards, or a subject in two splits
            raise Failure(str(error)) from error
        out = runtime.home_path() / "nfgan_pairs" / ref.version / "pairs.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pairs.table, out)
        counts = pairs.counts_table().to_pylist()
        schema = TableSchema(
            columns=[
                TableColumn("source", "string"),
                TableColumn("split", "string"),
                *[TableColumn(c, "int") for c in COUNT_COLUMNS],
            ]
        )
        by_split = {s: sum(r["pairs"] for r in counts if r["split"] == s) for s in ("train", "val", "test")}
        if not pairs.table.num_rows:
            context.log.warning(f"shard set {ref.version}: no NFGAN pairs (no source has neutral faces of a person)")
        return Output(
            str(out),
            metadata={
                "shard_version": ref.version,
                "pairs": pairs.table.num_rows,
                **{f"pairs_{s}": n for s, n in by_split.items()},
                "counts": MetadataValue.table([TableRecord(r) for r in counts], schema=schema),
                "path": MetadataValue.path(str(out)),
            },
            data_version=DataVersion(f"{ref.version}:{'+'.join(ref.sources or ())}"),
        )

    return [nfgan_pairs]
