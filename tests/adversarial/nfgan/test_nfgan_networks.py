"""NFGAN's networks against the paper's Tables 1-3: layers, kernels, strides, filters, BN and activations; shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adversarial.nfgan.networks import Decoder, Discriminator, Encoder, Generator, build_networks, weights_digest
from pipelines.model_params import NfganParams


def _layers(module: nn.Module, kind) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def _bn_after(sequence: nn.Sequential) -> list[bool]:
    """For each convolution of a flat Sequential: is it followed by a BatchNorm?"""
    items = list(sequence)
    return [
        i + 1 < len(items) and isinstance(items[i + 1], nn.BatchNorm2d)
        for i, m in enumerate(items)
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]


def test_encoder_is_table_1():
    params = NfganParams()
    encoder = Generator(
        params.image_size, 256, params.encoder_widths, params.encoder_hidden, params.decoder_widths
    ).encoder
    convs = _layers(encoder, nn.Conv2d)
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert _bn_after(encoder.convs) == [False, True, True, True]
    assert len(_layers(encoder.convs, nn.ReLU)) == 4
    fc1, bn, relu, fc2 = encoder.fc
    assert (fc1.out_features, isinstance(bn, nn.BatchNorm1d), isinstance(relu, nn.ReLU)) == (512, True, True)
    assert fc2.out_features == 256 and fc1.in_features == 256 * 4 * 4  # 64 -> 32 -> 16 -> 8 -> 4
    z = encoder(torch.rand(3, 1, 64, 64) * 2 - 1)
    assert z.shape == (3, 256) and (z < 0).any()  # FC2 has no non-linearity: negative codes exist


def test_decoder_is_table_2_and_doubles_five_times_to_64():
    decoder = Decoder((64, 64), NfganParams().decoder_widths, 256)
    fconvs = _layers(decoder, nn.ConvTranspose2d)
    assert [f.out_channels for f in fconvs] == [512, 256, 128, 64, 1]
    assert all(f.kernel_size == (3, 3) and f.stride == (2, 2) for f in fconvs)
    assert _bn_after(decoder.fconvs) == [True, True, True, True, False]
    assert isinstance(list(decoder.fconvs)[-1], nn.Tanh)
    assert (decoder.start_channels, decoder.start) == (64, (2, 2))  # z viewed as 64 x 2 x 2
    out = decoder(torch.randn(4, 256) * 10)
    assert out.shape == (4, 1, 64, 64) and out.abs().max() <= 1.0


def test_discriminator_is_table_3_with_a_patch_map_of_logits():
    d = Discriminator((64, 64), NfganParams().discriminator_widths, 0.3)
    convs = _layers(d, nn.Conv2d)
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert [c.stride for c in convs] == [(2, 2)] * 4 + [(1, 1)]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert _bn_after(d.convs) == [False, True, True, True]
    slopes = {m.negative_slope for m in _layers(d, nn.LeakyReLU)}
    assert slopes == {0.3}
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    logits = d(x)
    assert logits.shape == (2, 1, 4, 4)
    assert torch.allclose(d.probability(x), torch.sigmoid(logits))


def test_other_sizes_multiples_of_32_and_refusals():
    g = Generator((128, 96), 192, (8, 8, 8, 8), 16, (8, 8, 8, 8))
    assert g(torch.zeros(2, 1, 128, 96)).shape == (2, 1, 128, 96)  # z viewed as 16 x 4 x 3
    with pytest.raises(ValueError, match="divisible by 32"):
        Encoder((48, 48), (8, 8, 8, 8), 16, 256)
    with pytest.raises(ValueError, match="cannot be viewed"):
        Decoder((96, 96), (8, 8, 8, 8), 250)
    with pytest.raises(ValueError, match="multiples of 32"):
        NfganParams(image_size=(48, 48))


def test_seeded_networks_are_reproducible_and_leave_the_global_rng_alone():
    params = NfganParams(encoder_widths=(8, 8, 8, 8), encoder_hidden=16, decoder_widths=(8, 8, 8, 8))
    state = torch.random.get_rng_state()
    g1, d1 = build_networks(params, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    g2, d2 = build_networks(params, seed=5)
    g3, _ = build_networks(params, seed=6)
    assert weights_digest(g1) == weights_digest(g2) and weights_digest(d1) == weights_digest(d2)
    assert weights_digest(g1) != weights_digest(g3)
    rebuilt = Generator(**g1.config)
    rebuilt.load_state_dict(g1.state_dict())
    assert weights_digest(rebuilt) == weights_digest(g1)
    weights = torch.cat([m.weight.detach().flatten() for m in _layers(g1, nn.Conv2d)])
    assert 0.01 < float(weights.std()) < 0.03  # DCGAN's normal(0, 0.02)
