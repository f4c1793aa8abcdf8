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
    the metric promotion compares (for the docs and the scoreboard); ``code_version``: a hash of the code that
    shapes its models (Dagster's code_version, and part of every training key)."""

    name: str
    variants: Callable[[Params], tuple[str, ...]]
    datasets: tuple[str, ...]
    train: Train
    trained: Trained
    evaluate: Evaluate
    score: str
    code_version: Callable[[], str]


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
    )


FAMILY_FACTORIES: tuple[Callable[[], Family], ...] = (_flow_family,)


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
