"""The six model variants of the BPLF paper's ablation (Table 3), and ``build_model``.

| variant              | coupling                         | conditioner g | trained on      |
|----------------------|----------------------------------|---------------|-----------------|
| glow                 | affine (Glow)                    | 3x3&1x1       | ``pixels``      |
| glow_svd             | affine (Glow)                    | 3x3&1x1       | ``pixels_svd``  |
| bplf_3x3             | bi-parallel linear (K parts)     | 3x3           | ``pixels``      |
| bplf_3x3_1x1         | bi-parallel linear (K parts)     | 3x3&1x1       | ``pixels``      |
| bplf_3x3_svd         | bi-parallel linear (K parts)     | 3x3           | ``pixels_svd``  |
| bplf_3x3_1x1_svd     | bi-parallel linear (K parts)     | 3x3&1x1       | ``pixels_svd``  |

"_svd" changes the data, not the network: the paper truncates each image's singular values before the first
squeeze, which the data pipeline already stores in the shards' ``pixels_svd`` column. The model records the
column in ``model.pixel_column`` so the training loop reads the right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowmodels.conditioners import conditioner_factory
from flowmodels.dequantize import check_bits
from flowmodels.layers.couplings import AdditiveCoupling, AffineCoupling, BiParallelLinearCoupling
from flowmodels.model import FlowModel
from flowmodels.multiscale import MultiScaleFlow
from pipelines.params import FlowHparams


@dataclass(frozen=True)
class VariantSpec:
    coupling: str  # "glow" | "bplf"
    conditioner: str  # "3x3" | "3x3&1x1"
    pixel_column: str  # "pixels" | "pixels_svd"


VARIANTS: dict[str, VariantSpec] = {
    "glow": VariantSpec("glow", "3x3&1x1", "pixels"),
    "glow_svd": VariantSpec("glow", "3x3&1x1", "pixels_svd"),
    "bplf_3x3": VariantSpec("bplf", "3x3", "pixels"),
    "bplf_3x3_1x1": VariantSpec("bplf", "3x3&1x1", "pixels"),
    "bplf_3x3_svd": VariantSpec("bplf", "3x3", "pixels_svd"),
    "bplf_3x3_1x1_svd": VariantSpec("bplf", "3x3&1x1", "pixels_svd"),
}

# The one place these defaults live is the settings (params.yaml's model.hparams, typed by
# pipelines.params.FlowHparams); build_model fills what its caller leaves out from there.
DEFAULT_HPARAMS: dict[str, Any] = FlowHparams().model_dump()


def pixel_column(variant: str) -> str:
    """The shard column a variant is trained on: "pixels" or "pixels_svd"."""
    return _spec(variant).pixel_column


def _spec(variant: str) -> VariantSpec:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}") from None


def build_model(
    variant: str, image_shape: tuple[int, int, int], num_classes: int | None = None, **hparams: Any
) -> FlowModel:
    """Build one of ``VARIANTS`` for images of ``image_shape`` = (C, H, W), e.g. (1, 48, 48).

    ``num_classes``: ``None`` for an unconditional flow; 7 for the emotion-conditional one (the one-hot label
    enters every scale and shift, and the priors get class-dependent means: BPLF equation 3-8).

    hparams (defaults in ``DEFAULT_HPARAMS``): ``levels`` L, ``steps`` K per level, ``hidden`` conditioner
    width, ``n_bits`` (8 or 5), ``coupling_parts`` (BPLF only; >= 2), ``lu``, ``glow_coupling``
    ("affine"/"additive", Glow variants only), ``channels_last`` and ``winograd`` (speed switches that change
    no parameter: a checkpoint loads with either setting).

    The returned model's ``config`` holds exactly these arguments, so ``build_model(**model.config)`` plus
    ``load_state_dict`` restores a checkpoint.
    """
    spec = _spec(variant)
    unknown = set(hparams) - set(DEFAULT_HPARAMS)
    if unknown:
        raise TypeError(f"unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULT_HPARAMS)}")
    hp = {**DEFAULT_HPARAMS, **hparams}
    image_shape = tuple(int(v) for v in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be None or >= 2, got {num_classes}")
    if spec.coupling == "glow" and hp["coupling_parts"] != 2:
        raise ValueError("coupling_parts applies to the BPLF variants; Glow's coupling has two halves")
    check_bits(hp["n_bits"])
    if hp["glow_coupling"] not in ("affine", "additive"):
        raise ValueError(f"glow_coupling must be 'affine' or 'additive', got {hp['glow_coupling']!r}")

    make_conditioner = conditioner_factory(
        spec.conditioner, hp["hidden"], num_classes, hp["channels_last"], hp["winograd"]
    )

    def make_coupling(channels: int, spatial: tuple[int, int]):
        if spec.coupling == "bplf":
            return BiParallelLinearCoupling(channels, make_conditioner, hp["coupling_parts"], spatial, num_classes)
        if hp["glow_coupling"] == "additive":
            return AdditiveCoupling(channels, make_conditioner)
        return AffineCoupling(channels, make_conditioner)

    flow = MultiScaleFlow(image_shape, hp["levels"], hp["steps"], make_coupling, num_classes, lu=hp["lu"])
    config = {"variant": variant, "image_shape": list(image_shape), "num_classes": num_classes, **hp}
    return FlowModel(flow, hp["n_bits"], num_classes, spec.pixel_column, config)
