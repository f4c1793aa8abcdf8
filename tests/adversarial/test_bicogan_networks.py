"""BiCoGAN's networks: shapes at 48x48 and 64x64, the joint discriminator's inputs, configs and seeded weights."""

from __future__ import annotations

import pytest
import torch
from bicogan_data import TINY, one_thread, same_state  # noqa: F401 (autouse fixture)
from torch import nn

from adversarial.bicogan import BiCoGANNetworks, build_bicogan, build_seeded_bicogan

DEFAULT = {"z_dim": 100, "widths": (64, 128, 256), "latent_width": 512, "joint_width": 512}


@pytest.mark.parametrize("side", [48, 64])
def test_shapes_at_48_and_64(side):
    net = build_seeded_bicogan(0, image_shape=(1, side, side), num_classes=6, **DEFAULT)
    n = 3
    z, c = torch.randn(n, 100), torch.eye(6)[[0, 2, 5]]
    with torch.no_grad():
        x = net.generator(z, c)
    assert x.shape == (n, 1, side, side) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.std()) > 0.01  # tanh, not constant
    z_hat, logits = net.encoder(x)
    assert z_hat.shape == (n, 100) and logits.shape == (n, 6)
    assert net.discriminator(x, z_hat, torch.softmax(logits, 1)).shape == (n,)
    # DCGAN-style: every stage a 4x4/2 (fractional-strided) convolution doubling the side from side / 8
    deconvs = [m for m in net.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.kernel_size, m.stride) for m in deconvs] == [((4, 4), (2, 2))] * 3
    assert net.generator.base == (256, side // 8, side // 8)
    sizes, h = [], net.generator.project(torch.cat([z, c], 1)).view(n, *net.generator.base)
    for m in net.generator.upsample:
        h = m(h)
        if isinstance(m, nn.ConvTranspose2d):
            sizes.append(h.shape[-1])
    assert sizes == [side // 4, side // 2, side]


def test_the_discriminator_judges_the_joint_tuple():
    """D's logit depends on each of x, z and c (three paths joined), and it refuses tuples of the wrong shapes."""
    torch.manual_seed(0)
    net = build_bicogan(image_shape=(1, 48, 48), num_classes=6, **TINY)
    d = net.discriminator
    with torch.no_grad():  # weights well away from DCGAN's tiny start, so each path's effect is far above rounding
        for p in d.parameters():
            p.normal_(0.0, 0.3)
    x, z, c = torch.rand(4, 1, 48, 48) * 2 - 1, torch.randn(4, 8), torch.eye(6)[:4]
    with torch.no_grad():
        base = d(x, z, c)
        for changed in (d(x.flip(-1), z, c), d(x, -z, c), d(x, z, torch.eye(6)[2:6])):
            assert float((changed - base).abs().min()) > 1e-3
    assert len(list(d.latent_path.parameters())) == 4 and isinstance(d.x_path[0], nn.Conv2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())  # real and fake never share statistics
    for bad in ((x, z[:, :5], c), (x, z, c[:, :5]), (x, z[:3], c), (x[:, :, :40, :40], z, c)):
        with pytest.raises(ValueError):
            d(*bad)
    with pytest.raises(ValueError, match="G takes"):
        net.generator(z, c[:, :5])
    with pytest.raises(ValueError, match="E takes"):
        net.encoder(x[:, :, :32, :32])


def test_sides_must_fit_the_stages():
    with pytest.raises(ValueError, match="multiples of 2\\^len\\(widths\\) = 8"):
        build_bicogan(image_shape=(1, 50, 50), num_classes=6, **TINY)
    with pytest.raises(ValueError, match="num_classes"):
        build_bicogan(image_shape=(1, 48, 48), num_classes=1, **TINY)
    net = build_bicogan(image_shape=(1, 40, 56), num_classes=7, **TINY)  # any multiple of 8, non-square too
    assert net.generator(torch.randn(2, 8), torch.eye(7)[:2]).shape == (2, 1, 40, 56)


def test_config_rebuilds_and_the_seed_fixes_the_weights():
    state = torch.random.get_rng_state()
    a = build_seeded_bicogan(0, image_shape=(1, 48, 48), num_classes=6, **TINY)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left as it was
    b = build_seeded_bicogan(0, **a.config)
    other = build_seeded_bicogan(1, **a.config)
    assert isinstance(a, BiCoGANNetworks)
    assert same_state(a, b) and not same_state(a, other)
    assert a.config == {
        "image_shape": [1, 48, 48],
        "num_classes": 6,
        "z_dim": 8,
        "widths": [8, 16, 16],
        "latent_width": 16,
        "joint_width": 16,
    }
    rebuilt = build_bicogan(**a.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in a.state_dict().items()}


def test_dcgan_initialisation():
    net = build_seeded_bicogan(3, image_shape=(1, 48, 48), num_classes=6, **DEFAULT)
    weights = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert float(weights.mean()) == pytest.approx(0.0, abs=1e-3) and float(weights.std()) == pytest.approx(
        0.02, rel=0.02
    )
    scales = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert float(scales.mean()) == pytest.approx(1.0, abs=0.01)
    assert all(
        float(m.bias.detach().abs().max()) == 0
        for m in net.modules()
        if isinstance(m, nn.Linear) and m.bias is not None
    )
