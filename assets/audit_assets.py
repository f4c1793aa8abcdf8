"""The flow-density audit as an asset: every face of the latest checked shard set scored by a trained flow."""

from dagster import AssetExecutionContext, AssetsDefinition, Config, Failure, MaterializeResult, MetadataValue, asset

from assets.lineage import checked_shard_set
from assets.model_assets import run_context
from assets.pictures import png_metadata
from assets.resources import EmoflowRuntime, MlflowTracking
from pipelines.params import Params
from runs.datasets import enabled_sources_ref


class DensityAuditConfig(Config):
    """Run knobs: another variant than params evaluate.density_audit.variant, another model than its champion,
    and rows known to be bad (their ranks are reported: how well the audit finds them)."""

    variant: str | None = None
    model_uri: str | None = None
    known_bad_ids: list[str] = []


def build_audit_assets(settings: Params) -> list[AssetsDefinition]:
    variant = settings.evaluate.density_audit.variant

    @asset(
        deps=["emotionset_shards", f"evaluate_{variant}"],
        group_name="evaluation",
        kinds={"pytorch", "mlflow"},
        description=f"Every train and test face's bits/dim under the {variant} champion (params "
        "evaluate.density_audit): distributions per source and label, the least likely faces per source, "
        "scores.parquet for the opt-in density-outlier quarantine (data.audit.density_outliers).",
    )
    def density_audit(
        context: AssetExecutionContext,
        config: DensityAuditConfig,
        runtime: EmoflowRuntime,
        mlflow_tracking: MlflowTracking,
    ) -> MaterializeResult:
        from runs.density_audit import density_audit as run_audit

        record = checked_shard_set(context.instance)
        ctx = run_context(settings, runtime, mlflow_tracking, context)
        try:
            outcome = run_audit(
                ctx,
                enabled_sources_ref(settings, record.path),
                model_uri=config.model_uri,
                known_bad=config.known_bad_ids,
                variant=config.variant,
            )
        except RuntimeError as error:
            raise Failure(str(error)) from error
        report = outcome.report
        metadata = {
            "shard_version": outcome.shard_version,
            "model_uri": outcome.model_uri,
            "faces": report["faces"],
            "scores": MetadataValue.path(str(outcome.scores_file)),
            "mlflow_run_id": outcome.run_id or "",
            "mean_bits_per_dim": MetadataValue.json(report["mean_bits_per_dim"]),
            "known_bad": MetadataValue.json(report["known_bad"]),
        }
        for name, png in outcome.figures.items():
            metadata[f"figure_{name}"] = png_metadata(png, name.replace("_", " "))
        return MaterializeResult(metadata=metadata)

    return [density_audit]
