"""Which family trains which variant: the one table the CLI, DVC and the Dagster definitions look variants up
in. A family contributes its variants (from the settings), the datasets it trains on, and its run functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipelines.params import Params
from runs.context import RunContext
from runs.datasets import DatasetRef
from runs.outcomes import EvalOutcome, TrainOutcome

Train = Callable[..., TrainOutcome]  # (ctx, variant, data, max_steps=None, resume=True) -> TrainOutcome
Trained = Callable[..., "TrainOutcome | None"]  # (ctx, variant, data, max_steps=None) -> the finished run or None
Evaluate = Callable[[RunContext, TrainOutcome, DatasetRef], EvalOutcome]


@dataclass(frozen=True)
class Family:
    """``name``: the family; ``variants(settings)``: the variant names it answers to; ``datasets``: the
    dataset partitions it trains on; ``train`` / ``trained`` / ``evaluate``: its run functions; ``score``:
    the metric promotion compares; ``code_version``: a hash of the code that shapes its models (Dagster's
    code_version, and part of every training key); ``scoreboard``: how ``runs.scoreboard`` scores one of its
    models on the shared test images (None: the family has no scoreboard row)."""

    name: str
    variants: Callable[[Params], tuple[str, ...]]
    datasets: tuple[str, ...]
    train: Train
    trained: Trained
    evaluate: Evaluate
    score: str
    code_version: Callable[[], str]
    scoreboard: Callable[..., dict] | None = None  # (model, runs.scoreboard.ScoreInputs) -> its scoreboard columns
    needs_judge: bool = False  # its evaluation is refereed by the champion emotion judge (train that first)


def _flow_family() -> Family:
    from runs import flows

    return Family(
        name=flows.FAMILY,
        variants=lambda settings: tuple(settings.model.variants),
        datasets=("emotionset", "mnist"),
        train=flows.train_flow,
        trained=flows.trained_flow,
        evaluate=flows.evaluate_flow,
        score=flows.SCORE.metric,
        code_version=flows.flow_code_version,
        scoreboard=flows.scoreboard_scores,
    )


def _flow_latent_family() -> Family:
    from runs import flow_latent

    return Family(
        name=flow_latent.FAMILY,
        variants=lambda settings: (flow_latent.VARIANT,),
        datasets=("emotionset",),
        train=flow_latent.train_flow_latent,
        trained=flow_latent.trained_flow_latent,
        evaluate=flow_latent.evaluate_flow_latent,
        score=flow_latent.SCORE.metric,
        code_version=flow_latent.flow_latent_code_version,
        scoreboard=flow_latent.scoreboard_scores,
    )


def _judge_family() -> Family:
    from runs import judge

    return Family(
        name=judge.FAMILY,
        variants=lambda settings: (judge.VARIANT,),
        datasets=("emotionset",),
        train=judge.train_judge,
        trained=judge.trained_judge,
        evaluate=judge.evaluate_judge,
        score=judge.SCORE.metric,
        code_version=judge.judge_code_version,
        scoreboard=judge.scoreboard_scores,
    )


def _bicogan_family() -> Family:
    from runs import bicogan

    return Family(
        name=bicogan.FAMILY,
        variants=lambda settings: (bicogan.VARIANT,),
        datasets=("emotionset",),
        train=bicogan.train_bicogan,
        trained=bicogan.trained_bicogan,
        evaluate=bicogan.evaluate_bicogan,
        score=bicogan.SCORE.metric,
        code_version=bicogan.bicogan_code_version,
        scoreboard=bicogan.scoreboard_scores,
        needs_judge=True,
    )


def _nfgan_family() -> Family:
    from runs import nfgan

    return Family(
        name=nfgan.FAMILY,
        variants=lambda settings: (nfgan.VARIANT,),
        datasets=("emotionset",),
        train=nfgan.train_nfgan,
        trained=nfgan.trained_nfgan,
        evaluate=nfgan.evaluate_nfgan,
        score=nfgan.SCORE.metric,
        code_version=nfgan.nfgan_code_version,
        scoreboard=nfgan.scoreboard_scores,
    )


FAMILY_FACTORIES: tuple[Callable[[], Family], ...] = (
    _flow_family,
    _judge_family,
    _flow_latent_family,
    _bicogan_family,
    _nfgan_family,
)


def families() -> tuple[Family, ...]:
    return tuple(make() for make in FAMILY_FACTORIES)


def family_of(variant: str, settings: Params) -> Family:
    """The family a variant belongs to; a clear error naming every known variant otherwise."""
    known: list[str] = []
    for family in families():
        names = family.variants(settings)
        if variant in names:
            return family
        known.extend(names)
    raise ValueError(f"unknown variant {variant!r}; known: {known}")


def all_variants(settings: Params) -> list[tuple[Family, str]]:
    return [(family, variant) for family in families() for variant in family.variants(settings)]
