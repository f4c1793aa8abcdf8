"""What retraining requests: which variants, for which shard set, under which run key (shared by the
schedule and the sensor)."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason

from assets.lineage import ready_shard_set
from assets.resources import MlflowTracking
from pipelines.params import Params
from runs.datasets import key_of
from runs.registry import CHAMPION, registered_model_name


def variants_to_retrain(settings: Params, tracking: MlflowTracking) -> list[str]:
    """The flow variants holding a champion, plus params retrain.variants; the default variant when that is empty."""
    client = tracking.tracking()
    variants = [
        v for v in settings.model.variants if client.version_by_alias(registered_model_name(v), CHAMPION) is not None
    ]
    variants += [v for v in settings.retrain.variants if v not in variants]
    return variants or [settings.model.variant]


def retrain_requests(
    instance: DagsterInstance, settings: Params, tracking: MlflowTracking, reason: str
) -> list[RunRequest] | SkipReason:
    """One run per variant on the latest shard set, only once its blocking checks passed.

    The run key names the shard version and the training settings: asking again with nothing changed yields the
    same key, which Dagster does not launch twice (and the training asset would re-use its result anyway).
    """
    shard_set, why = ready_shard_set(instance)
    if shard_set is None:
        return SkipReason(f"not retrained: {why}")
    fingerprint = key_of({"train": settings.train.model_dump(), "model": settings.model.hparams.model_dump()})[:12]
    return [
        RunRequest(
            run_key=f"{variant}:{shard_set.version}:{fingerprint}",
            partition_key="emotionset",
            asset_selection=[AssetKey("training_data"), AssetKey(f"train_{variant}"), AssetKey(f"evaluate_{variant}")],
            tags={"emoflow/retrain": reason, "emoflow/shard_version": shard_set.version, "emoflow/variant": variant},
        )
        for variant in variants_to_retrain(settings, tracking)
    ]
