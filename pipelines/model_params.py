"""The model half's settings: the flows' hyper-parameters and training, augmentation, evaluation, and one
section per model family (the emotion judge, paper 002's flow-latent classifier, BiCoGAN, NFGAN) and the
scoreboard. Each family's run functions receive their section; its defaults live here and nowhere else."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from pipelines.params_types import (
    Bool,
    Float,
    Int,
    NonNegativeInt,
    PositiveInt,
    Range,
    Section,
    Str,
)

ABLATION_VARIANTS = ("glow", "glow_svd", "bplf_3x3", "bplf_3x3_1x1", "bplf_3x3_svd", "bplf_3x3_1x1_svd")


class FlowHparams(Section):
    """``flowmodels.build_model``'s hyper-parameters: the one place their defaults live."""

    levels: PositiveInt = 3  # Glow's L
    steps: PositiveInt = 8  # Glow's K per level
    hidden: PositiveInt = 128  # conditioner width
    n_bits: Literal[5, 8] = 8
    coupling_parts: Annotated[StrictInt, Field(ge=2)] = 2  # BPLF: parts of the linear coupling (2 = bi-parallel)
    lu: Bool = True  # LU-parametrised 1x1 convolution (false: plain weight + slogdet)
    glow_coupling: Literal["affine", "additive"] = "affine"  # Glow variants only
    channels_last: Bool = True  # NHWC convolutions in the conditioners: speed only, same numbers
    winograd: Bool = True  # CPU Winograd for the 3x3 conditioners' hidden convolution: speed only


class ModelParams(Section):
    variant: Literal[ABLATION_VARIANTS] = "bplf_3x3_svd"  # type: ignore[valid-type]  # the BPLF paper's best
    variants: tuple[Literal[ABLATION_VARIANTS], ...] = ABLATION_VARIANTS  # type: ignore[valid-type]
    conditional: Bool = True  # emotion-conditional (BPLF equation 3-8)
    hparams: FlowHparams = Field(default_factory=FlowHparams)

    @model_validator(mode="after")
    def _variant_listed(self) -> ModelParams:
        if self.variant not in self.variants:
            raise ValueError(f"variant {self.variant!r} must be one of variants {list(self.variants)}")
        return self


class LoopParams(Section):
    """What ``training.LoopConfig`` takes: budgets (whichever comes first), cadences, the non-finite guard."""

    max_steps: PositiveInt | None = 2000
    max_epochs: Annotated[Float, Field(gt=0)] | None = None
    max_seconds: Annotated[Float, Field(gt=0)] | None = None
    checkpoint_every: NonNegativeInt = 500  # 0: only at the end
    val_every: NonNegativeInt = 500  # 0: only at the end
    log_every: PositiveInt = 10
    max_bad_steps: PositiveInt = 10  # consecutive non-finite steps before training stops with advice
    keep_checkpoints: PositiveInt | None = None  # step files kept (null: all; last.pt always)
    seed: Int = 0
    device: Annotated[Str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")] = "auto"

    @model_validator(mode="after")
    def _some_budget(self):
        if self.max_steps is None and self.max_epochs is None and self.max_seconds is None:
            raise ValueError("set at least one budget: max_steps, max_epochs or max_seconds")
        return self


class TrainParams(LoopParams):
    """The flows' training (``flowmodels.training.FlowTrainer``)."""

    optimizer: Literal["adam", "adamax", "adamw"] = "adamax"
    lr: Annotated[Float, Field(gt=0)] = 1e-3
    warmup_steps: NonNegativeInt = 200
    grad_clip: Annotated[Float, Field(ge=0)] | None = 50.0  # 0 or null: no clipping
    batch_size: PositiveInt = 64  # the global batch (split over the ranks of a distributed run)
    bf16: Bool = False  # bf16 autocast (GPU); log-determinants stay float32
    init_batch: PositiveInt = 256  # images of actnorm's data-dependent initialisation

    # The fields that shape the trajectory: a checkpoint resumes only under the same values. Budgets, cadences,
    # the device and the skip tolerance may change between an interrupted run and its resumption.
    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "lr",
        "warmup_steps",
        "grad_clip",
        "batch_size",
        "bf16",
        "seed",
        "init_batch",
    )

    def trajectory(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.TRAJECTORY}


class AugmentParams(Section):
    """``training.augment.Augmentation``: ranges drawn uniformly per image (null / 0: off). BiCoGAN's table:
    rotate -50..30 (the one that helped), crop 0..0.2, flip 1, gamma contrast, scale 1..1.5, shear 0..0.2."""

    rotate: Range | None = None  # degrees
    crop: Range | None = None  # fraction of each side cut away, the rest resized back
    flip: Annotated[Float, Field(ge=0, le=1)] = 0.0  # probability of a horizontal flip
    gamma: Range | None = None  # exponent range
    scale: Range | None = None  # zoom factor range
    shear: Range | None = None  # shear factor range

    def build(self):
        from training.augment import Augmentation

        return Augmentation(**self.model_dump())


class DensityAuditParams(Section):
    # whose champion scores every face (runs.density_audit): a raw-pixel variant sees the faces as the shards hold them
    variant: Str = "bplf_3x3"
    least_likely: PositiveInt = 12  # faces per source in the strip of the least likely
    splits: tuple[Literal["train", "val", "test"], ...] = ("train", "test")


class EvaluateParams(Section):
    temperatures: tuple[Annotated[Float, Field(gt=0)], ...] = (0.5, 0.7, 1.0)
    samples_per_class: PositiveInt = 8
    tsne_points: NonNegativeInt = 1000  # 0: no t-SNE
    batch_size: PositiveInt = 128
    seed: Int = 0
    class_prior: Literal["train", "uniform"] = "train"  # Bayes classifiers' p(y): training label frequencies
    density_audit: DensityAuditParams = Field(default_factory=DensityAuditParams)
