import pytest
import torch

from flowmodels.dequantize import bin_centres, dequantize, quantize, to_uint8

ALL_PIXELS = torch.arange(256, dtype=torch.uint8)


@pytest.mark.parametrize("n_bits", [8, 5])
def test_dequantised_values_stay_in_their_bin(n_bits):
    q = quantize(ALL_PIXELS, n_bits)
    assert int(q.min()) == 0 and int(q.max()) == 2**n_bits - 1
    for noise in (torch.zeros(256), torch.full((256,), 0.999), torch.rand(256)):
        x = dequantize(ALL_PIXELS, n_bits, noise)
        assert float(x.min()) >= -0.5 and float(x.max()) < 0.5
        assert torch.equal(torch.floor((x + 0.5) * 2**n_bits).long(), q)
        # back to pixels: the bin, at 8-bit scale
        assert torch.equal(to_uint8(x, n_bits), (q * 2 ** (8 - n_bits)).to(torch.uint8))


def test_bin_width_and_centres():
    x = bin_centres(ALL_PIXELS, 8)
    assert torch.allclose(x[1:] - x[:-1], torch.full((255,), 1 / 256))
    assert torch.allclose(x[0], torch.tensor(-0.5 + 0.5 / 256))
    assert torch.equal(quantize(torch.tensor([0, 7, 8, 255], dtype=torch.uint8), 5), torch.tensor([0, 0, 1, 31]))


def test_random_noise_is_uniform_over_the_bin():
    x = dequantize(torch.zeros(200000, dtype=torch.uint8), 8)
    u = (x + 0.5) * 256
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


def test_rejects_non_uint8_and_unsupported_bits():
    with pytest.raises(TypeError):
        quantize(torch.zeros(3), 8)
    with pytest.raises(ValueError):
        quantize(ALL_PIXELS, 7)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
