"""Bits/dim: both conventions against hand calculations, and against each other on the same model."""

import math

import pytest
import torch
from flow_numerics import perturb_parameters

from flowmodels import bits_per_dim, bits_per_dim_bplf, build_model

SIGMOID2 = 1 / (1 + math.exp(-2.0))


def test_uniform_densities_give_n_bits_in_both_conventions():
    """A uniform density on the data cube is worth exactly n bits per dimension: log p = 0 on [-0.5, 0.5)^D,
    log p' = -D ln 2 on [-1, 1]^D."""
    d = 784
    assert torch.allclose(bits_per_dim(torch.zeros(3), d, 8), torch.full((3,), 8.0))
    assert torch.allclose(bits_per_dim_bplf(torch.full((3,), -d * math.log(2)), d, 8), torch.full((3,), 8.0))
    assert torch.allclose(bits_per_dim(torch.zeros(1), d, 5), torch.full((1,), 5.0))
    # (4-1) literally: -(log p'/D - ln 128)/ln 2
    log_p = torch.tensor([-1234.5])
    assert torch.allclose(bits_per_dim_bplf(log_p, d), -(log_p / d - math.log(128)) / math.log(2))


def _predicted_fresh_bpd(num_dims: int, scaled_dims: int, n_bits: int) -> float:
    """Hand calculation for a freshly initialised flow on uniform noise (see the test below).

    Every latent dimension ends up as whitened data times a factor sqrt(v): v = 1, or v = s^2 with
    s = sigmoid(2) for the dimensions the last coupling of their level scaled and no actnorm re-normalised.
    Whitening U[-0.5, 0.5) (variance 1/12) contributes ln sqrt(12) per dimension to log|det|; a dimension with
    variance v under the N(0, 1) prior costs 1/2 ln 2 pi + v/2 nats and contributes 1/2 ln v to log|det|.
    """
    s2 = SIGMOID2**2
    nll = num_dims * (0.5 * math.log(2 * math.pi) - 0.5 * math.log(12))
    nll += (num_dims - scaled_dims) * 0.5 + scaled_dims * (0.5 * s2 - 0.5 * math.log(s2))
    return (nll + num_dims * n_bits * math.log(2)) / (num_dims * math.log(2))


# 1x16x16, L=2: z_1 is 2x8x8 = 128 dims (the affine-transformed half), top 8x4x4 = 128 dims (half transformed).
COUPLINGS = {
    "additive": ("glow", {"glow_coupling": "additive"}, 0),
    "glow_affine": ("glow", {}, 128 + 64),
    "bplf": ("bplf_3x3", {}, 256),  # every part of a bi-parallel coupling is scaled
    "bplf_4_parts": ("bplf_3x3_1x1", {"coupling_parts": 4}, 256),
}


@pytest.mark.parametrize("n_bits", [8, 5])
def test_fresh_flow_on_uniform_noise_matches_hand_calculation(n_bits):
    """At initialisation the conditioners output 0, the 1x1 convolutions are rotations and actnorm whitens
    its first batch: the flow is a known linear map, so the bits/dim of uniform noise can be computed by hand.
    Uniform 8-bit pixels plus uniform dequantisation noise are exactly U[-0.5, 0.5) per dimension, at any n.

    Tolerances: the batch average of z^2/2 over N*D = 262144 values has a standard deviation of
    0.5 * sqrt(Var z^2 / (N*D)) / ln 2 = 0.0013 bits (Var z^2 = 4/5 for whitened uniform data), so the absolute
    check allows 0.005 (~4 sigma). That noise is common to all couplings on the same batch, so their
    differences are checked to 0.0015, well inside the 0.016-0.021 bits that separate them.
    """
    x = torch.randint(0, 256, (1024, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    measured, expected = {}, {}
    for name, (variant, hp, scaled_dims) in COUPLINGS.items():
        torch.manual_seed(0)
        model = build_model(variant, (1, 16, 16), levels=2, steps=2, hidden=16, n_bits=n_bits, **hp)
        with torch.no_grad():  # the first pass initialises actnorm on this batch
            measured[name] = (
                model.bits_per_dim(x, noise=torch.rand(x.shape, generator=torch.Generator().manual_seed(1)))
                .mean()
                .item()
            )
        expected[name] = _predicted_fresh_bpd(256, scaled_dims, n_bits)
        assert abs(measured[name] - expected[name]) < 0.005, (name, measured[name], expected[name])
    for name in COUPLINGS:
        gap, expected_gap = measured[name] - measured["additive"], expected[name] - expected["additive"]
        assert abs(gap - expected_gap) < 0.0015, (name, gap, expected_gap)
    assert expected["bplf"] - expected["additive"] > 0.02  # the calculation tells the couplings apart


@pytest.mark.parametrize("n_bits", [8, 5])
@pytest.mark.parametrize("variant,num_classes", [("glow", None), ("bplf_3x3", 7)])
def test_standard_and_bplf_conventions_agree_on_the_same_model(variant, num_classes, n_bits):
    torch.manual_seed(0)
    model = build_model(variant, (1, 16, 16), num_classes, levels=2, steps=2, hidden=16, n_bits=n_bits)
    x = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    y = torch.arange(6) if num_classes else None
    model.initialize(x, y)
    perturb_parameters(model, 0.05)
    noise = torch.rand(x.shape)
    standard = model.bits_per_dim(x, y, noise=noise)
    bplf = model.bits_per_dim(x, y, noise=noise, convention="bplf")
    assert torch.allclose(standard, bplf, atol=1e-5)
    # the [-1, 1] data really are a different set of numbers: twice the [-0.5, 0.5) ones, with the
    # log-determinant of that map accounted for (without it the two would differ by exactly one bit)
    log_p = model.log_prob(model.dequantize(x, noise), y)
    naive = bits_per_dim_bplf(log_p, 256, n_bits)
    assert torch.allclose(standard - naive, torch.ones(6), atol=1e-5)
    with pytest.raises(ValueError):
        model.bits_per_dim(x, y, convention="nats")
