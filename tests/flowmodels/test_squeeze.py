import pytest
import torch
from flow_numerics import brute_force_logdet

from flowmodels.layers import Squeeze


def test_each_2x2_block_becomes_four_channels_in_glow_order():
    x = torch.randn(2, 3, 6, 4)
    y, logdet = Squeeze()(x)
    assert y.shape == (2, 12, 3, 2) and torch.equal(logdet, torch.zeros(2))
    for c in range(3):
        for a in range(2):
            for b in range(2):
                assert torch.equal(y[:, c * 4 + 2 * a + b], x[:, c, a::2, b::2])


def test_inverse_and_volume_preservation():
    layer = Squeeze()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    y, _ = layer(x)
    assert torch.equal(layer.inverse(y)[0], x)
    assert torch.allclose(brute_force_logdet(layer, x), torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_odd_size_is_rejected():
    with pytest.raises(ValueError):
        Squeeze()(torch.randn(1, 1, 5, 4))
