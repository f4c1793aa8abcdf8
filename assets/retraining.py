"""What retraining requests: which variants, for which shard set, under which run key (shared by the
schedule and the sensor)."""

from __future__ import annotations

import hashlib
import json

from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason

from assets.lineage import latest_shard_set, shard_checks_passed
from assets.resources import EmoflowConfig
from assets.tracking import CHAMPION, MlflowTracking


def variants_to_retrain(emoflow: EmoflowConfig, tracking: MlflowTracking) -> list[str]:
    """The variants holding a champion, plus params retrain.variants; the default variant when that is empty."""
    params = emoflow.params()
    variants = [v for v in params.model.variants if tracking.version_by_alias(v, CHAMPION) is not None]
    variants += [v for v in params.retrain.variants if v not in variants]
    return variants or [params.model.variant]


def retrain_requests(
    instance: DagsterInstance, emoflow: EmoflowConfig, tracking: MlflowTracking, reason: str
) -> list[RunRequest] | SkipReason:
    """One run per variant on the latest shard set, only once its blocking checks passed.

    The run key names the shard version and the training params: asking again with nothing changed yields
    the same key, which Dagster does not launch twice (and the training asset would re-use its result anyway).
    """
    shard_set = latest_shard_set(instance)
    if shard_set is None:
        return SkipReason("no EmotionSet shards materialized yet")
    passed, detail = shard_checks_passed(instance, shard_set)
    if not passed:
        return SkipReason(f"shard set {shard_set.version} not retrained: {detail}")
    params = emoflow.params()
    fingerprint = hashlib.sha256(
        json.dumps({"train": params.train, "model": params.model.hparams}, sort_keys=True, default=str).encode()
    ).hexdigest()[:12]
    return [
        RunRequest(
            run_key=f"{variant}:{shard_set.version}:{fingerprint}",
            partition_key="emotionset",
            asset_selection=[AssetKey(f"train_{variant}"), AssetKey(f"evaluate_{variant}")],
            tags={"emoflow/retrain": reason, "emoflow/shard_version": shard_set.version, "emoflow/variant": variant},
        )
        for variant in variants_to_retrain(emoflow, tracking)
    ]
