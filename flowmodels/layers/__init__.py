"""Invertible layers, each a ``flowmodels.flows.Flow`` (except ``Split``, which factors out a latent)."""

from flowmodels.layers.actnorm import ActNorm
from flowmodels.layers.couplings import AdditiveCoupling, AffineCoupling, BiParallelLinearCoupling
from flowmodels.layers.invconv import InvertibleConv1x1
from flowmodels.layers.scale import ConstantScale
from flowmodels.layers.split import Split
from flowmodels.layers.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "BiParallelLinearCoupling",
    "ConstantScale",
    "InvertibleConv1x1",
    "Split",
    "Squeeze",
]
