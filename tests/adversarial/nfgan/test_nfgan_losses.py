"""The five losses of NFGAN's section 4 on hand-made inputs: each equals its formula written out with loops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adversarial.nfgan.losses import (
    ExternalFeatures,
    discriminator_loss,
    generator_adversarial_loss,
    identity_loss,
    laplacian,
    perceptual_loss,
    pixel_loss,
    symmetry_loss,
)


def _image(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]


def test_pixel_loss_is_the_mean_absolute_difference():
    x = _image([[0.5, -1.0], [0.25, 1.0]])
    y = _image([[0.0, -0.5], [0.25, -1.0]])
    # eq. 7: (|0.5| + |-0.5| + 0 + |2|) / (2 * 2)
    assert pixel_loss(x, y).item() == pytest.approx(3.0 / 4)
    batch = torch.cat([x, torch.zeros_like(x)]), torch.cat([y, torch.zeros_like(y)])
    assert pixel_loss(*batch).item() == pytest.approx(3.0 / 8)  # averaged over the batch too


def _symmetry_by_loops(image: torch.Tensor) -> float:
    """Eq. 3 literally: (1 / (H * W/2)) sum_{n=1}^{W/2} sum_{m=1}^{H} |x_{n,m} - x_{W-(n-1),m}| (n: column)."""
    _, _, h, w = image.shape
    total = 0.0
    for n in range(1, w // 2 + 1):
        for m in range(1, h + 1):
            total += abs(float(image[0, 0, m - 1, n - 1]) - float(image[0, 0, m - 1, w - (n - 1) - 1]))
    return total / (h * w / 2)


def test_symmetry_loss_follows_equation_3():
    x = _image([[1.0, 2.0, 4.0, 8.0], [0.0, -1.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    # by hand: row 1 |1-8| + |2-4| = 9, row 2 |0-0.5| + |-1-3| = 4.5, row 3: 0; over H * W/2 = 6 cells
    assert symmetry_loss(x, "pixel").item() == pytest.approx(13.5 / 6)
    assert _symmetry_by_loops(x) == pytest.approx(13.5 / 6)
    g = torch.Generator().manual_seed(3)
    for w in (4, 6, 64):
        random = torch.rand((1, 1, 5, w), generator=g, dtype=torch.float64)
        assert symmetry_loss(random, "pixel").item() == pytest.approx(_symmetry_by_loops(random))


def test_symmetry_loss_is_zero_on_a_mirror_symmetric_image_and_only_then():
    g = torch.Generator().manual_seed(0)
    left = torch.rand((2, 1, 64, 32), generator=g) * 2 - 1
    symmetric = torch.cat([left, left.flip(-1)], dim=-1)
    assert torch.equal(symmetric, symmetric.flip(-1))
    for space in ("pixel", "laplacian"):
        assert symmetry_loss(symmetric, space).item() == 0.0
        broken = symmetric.clone()
        broken[0, 0, 10, 3] += 0.5
        assert symmetry_loss(broken, space).item() > 0
    with pytest.raises(ValueError, match="symmetry space"):
        symmetry_loss(symmetric, "gradient")


def test_laplacian_is_the_four_neighbour_stencil():
    x = torch.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    lap = laplacian(x)[0, 0]
    assert lap[2, 2].item() == -4.0
    assert [lap[1, 2].item(), lap[3, 2].item(), lap[2, 1].item(), lap[2, 3].item()] == [1.0] * 4
    assert lap.abs().sum().item() == 8.0
    assert torch.all(laplacian(torch.full((1, 1, 4, 4), 0.3)).abs() < 1e-6)  # constant image: zero (edges replicated)


def test_adversarial_losses_equal_the_cross_entropy_of_the_sigmoid():
    real = torch.tensor([[2.0, -1.0], [0.5, 0.0]], dtype=torch.float64)[:, None, :, None]  # (N=2, 1, 2, 1) patches
    fake = torch.tensor([[-3.0, 1.0], [0.0, 4.0]], dtype=torch.float64)[:, None, :, None]
    p_real, p_fake = torch.sigmoid(real), torch.sigmoid(fake)
    # eq. 4: -log Dis(g) - log(1 - Dis(x~)), each averaged over the batch and patch map
    expected = (-torch.log(p_real)).mean() + (-torch.log(1 - p_fake)).mean()
    assert discriminator_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-12)
    # eq. 5: -log Dis(x~)
    assert generator_adversarial_loss(fake).item() == pytest.approx((-torch.log(p_fake)).mean().item(), rel=1e-12)
    # at Dis = 1/2 everywhere both terms are log 2
    zeros = torch.zeros((3, 1, 4, 4))
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    # a confident discriminator: finite where log(sigmoid) in float32 would give inf
    extreme = torch.full((1, 1, 2, 2), 200.0)
    assert discriminator_loss(-extreme, extreme).item() == pytest.approx(400.0)
    assert generator_adversarial_loss(-extreme).item() == pytest.approx(200.0)


class _TwoLayers(nn.Module):
    """A fixed hand-made extractor: the image itself (a 1-channel map) and a 2-channel map of its 2x2 sums."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pooled = nn.functional.avg_pool2d(x, 2) * 4
        return [x, torch.cat([pooled, -2 * pooled], dim=1)]


def test_perceptual_loss_is_the_squared_feature_error_over_channels_averaged_over_positions():
    y = _image([[0.0, 1.0], [2.0, 3.0]])
    x = _image([[1.0, 1.0], [2.0, 1.0]])
    # layer 1 (1 channel, 2x2): (1 + 0 + 0 + 4) / 4; layer 2 (2 channels, 1x1): sums 5 vs 6 -> (1 + 4) / 1
    assert perceptual_loss(x, y, _TwoLayers()).item() == pytest.approx(5 / 4 + 5)
    # a vector feature (N, D) is a 1x1 map: the squared Euclidean distance
    vector = perceptual_loss(x, y, lambda t: t.flatten(1))
    assert vector.item() == pytest.approx(5.0)
    # only the generated side carries gradient
    x.requires_grad_(True)
    y.requires_grad_(True)
    perceptual_loss(x, y, _TwoLayers()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and y.grad is None


def test_identity_loss_is_the_l1_feature_distance_to_the_input_summed_over_layers():
    inputs = _image([[0.0, 1.0], [2.0, 3.0]])
    generated = _image([[1.0, 1.0], [2.0, 1.0]])
    # eq. 6: layer 1 (|1| + 0 + 0 + |-2|) / 4; layer 2 (sum 5 vs 6): (|-1| + |2|) / 1
    assert identity_loss(generated, inputs, _TwoLayers()).item() == pytest.approx(3 / 4 + 3)
    batch = identity_loss(torch.cat([generated, inputs]), torch.cat([inputs, inputs]), _TwoLayers())
    assert batch.item() == pytest.approx((3 / 4 + 3) / 2)


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.seen: torch.Tensor | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach()
        return x.mean(dim=(2, 3)) * self.weight


def test_external_features_rescale_resize_and_stay_frozen():
    recorder = _Recorder().train()
    adapter = ExternalFeatures(recorder, "features", (48, 48)).train()
    assert not recorder.training and not recorder.weight.requires_grad
    x = torch.full((2, 1, 64, 64), -1.0)
    x[1] = 1.0
    out = adapter(x)
    assert recorder.seen.shape == (2, 1, 48, 48)
    assert torch.allclose(recorder.seen[0], torch.zeros(1, 48, 48)) and torch.allclose(
        recorder.seen[1], torch.ones(1, 48, 48)
    )
    assert out.shape == (2, 1)
