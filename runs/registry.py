"""Registered model names and candidate/champion promotion (MLflow aliases), for every family.

Every new version gets the alias ``candidate``; evaluation moves ``champion`` to it only when it beats the
current champion on the same test split, by the family's score (flows: test bits/dim, lower is better; the
judge: test accuracy, higher is better; ...). The comparison is recorded as tags on the candidate version.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CANDIDATE = "candidate"
CHAMPION = "champion"
PREFIX = "emoflow-"


def registered_model_name(variant: str, dataset: str = "emotionset", sources: tuple[str, ...] | None = None) -> str:
    """The registry entry of a (variant, dataset) model: ``emoflow-<variant>`` for the EmotionSet (what users
    ask for: ``models:/emoflow-bplf_3x3_svd@champion``), ``emoflow-<variant>-<dataset>`` for other data, so an
    MNIST model never competes with an EmotionSet champion; a model trained on some sources only (the
    cross-dataset matrix) is ``emoflow-<variant>-<source>[+<source>...]``."""
    if sources:
        return f"{PREFIX}{variant}-{'+'.join(sources)}"
    return f"{PREFIX}{variant}" if dataset == "emotionset" else f"{PREFIX}{variant}-{dataset}"


@dataclass(frozen=True)
class Score:
    """The number a family is promoted by: ``metric`` (as logged, e.g. "test_bpd"), and its direction."""

    metric: str
    lower_is_better: bool

    def better(self, candidate: float, champion: float) -> bool:
        return candidate < champion if self.lower_is_better else candidate > champion


@dataclass(frozen=True)
class PromotionDecision:
    registered_model: str
    version: str
    promoted: bool
    metric: str
    candidate_score: float
    champion_version: str | None
    champion_score: float | None
    test_split: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)

    def as_tags(self) -> dict[str, str]:
        tags = {
            "promotion.decision": CHAMPION if self.promoted else CANDIDATE,
            "promotion.reason": self.reason,
            "promotion.test_split": self.test_split,
            "promotion.metric": self.metric,
            f"promotion.candidate_{self.metric}": f"{self.candidate_score:.6f}",
        }
        if self.champion_version is not None:  # no champion before: no empty tags
            tags["promotion.champion_version"] = self.champion_version
        if self.champion_score is not None:
            tags[f"promotion.champion_{self.metric}"] = f"{self.champion_score:.6f}"
        return tags


def decide(
    registered_model: str,
    version: str,
    score: Score,
    candidate_score: float,
    test_split: str,
    champion_version: str | None,
    champion_score: float | None,
) -> PromotionDecision:
    """The decision alone (no registry access): champion when there is none, when it already is, or when it
    beats the champion's score on the same test split."""
    version = str(version)
    common = dict(
        registered_model=registered_model,
        version=version,
        metric=score.metric,
        candidate_score=candidate_score,
        test_split=test_split,
    )
    if champion_version == version:
        return PromotionDecision(
            **common,
            promoted=True,
            champion_version=champion_version,
            champion_score=champion_score,
            reason="already champion",
        )
    if champion_version is None:
        return PromotionDecision(
            **common, promoted=True, champion_version=None, champion_score=None, reason="no champion yet"
        )
    if champion_score is None:
        raise ValueError("the champion's score on this test split is needed to compare")
    better = score.better(candidate_score, champion_score)
    sign = ("<" if better else ">=") if score.lower_is_better else (">" if better else "<=")
    reason = f"test {score.metric} {candidate_score:.4f} {sign} champion v{champion_version}'s {champion_score:.4f}"
    return PromotionDecision(
        **common, promoted=better, champion_version=champion_version, champion_score=champion_score, reason=reason
    )
