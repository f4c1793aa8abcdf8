import torch
from flow_numerics import perturb_parameters

from flowmodels import build_model, class_mean_latents, transfer_expression


def _model(num_classes=None):
    torch.manual_seed(0)
    model = build_model("glow", (1, 16, 16), num_classes, levels=2, steps=2, hidden=16)
    x = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8)
    model.initialize(x, torch.arange(8) % 3 if num_classes else None)
    return perturb_parameters(model, 0.05)


def _data(n=30):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 3


def test_class_means_match_direct_averages():
    model = _model()
    x, y = _data()
    means = class_mean_latents(model, x, y, 3, batch_size=7)  # batches that straddle classes
    latents = model.encode(x)
    for c in range(3):
        for level, z in enumerate(latents):
            assert torch.allclose(means.class_means[c][level], z[y == c].mean(0), atol=1e-5)
            assert torch.allclose(means.other_means[c][level], z[y != c].mean(0), atol=1e-5)
    assert means.counts == [10, 10, 10]


def test_transfer_moves_the_latent_by_the_class_direction():
    model = _model()
    x, y = _data()
    means = class_mean_latents(model, x, y, 3)
    test = torch.rand(2, 1, 16, 16) - 0.5
    moved = transfer_expression(model, test, target=1, means=means)
    delta = [a - b for a, b in zip(model.encode(moved), model.encode(test))]
    for d, expected in zip(delta, means.direction(1)):
        assert torch.allclose(d, expected.expand_as(d), atol=1e-3)
    assert torch.allclose(transfer_expression(model, test, 1, means, strength=0.0), test, atol=1e-4)


def test_transfer_with_a_conditional_model_decodes_with_the_target_label():
    model = _model(num_classes=3)
    x, y = _data()
    means = class_mean_latents(model, x, y, 3)
    test = torch.rand(2, 1, 16, 16) - 0.5
    out = transfer_expression(model, test, 2, means, source_labels=torch.tensor([0, 1]), strength=0.0)
    # strength 0: encode with the source labels, decode with the target label: a different image
    assert out.shape == test.shape and not torch.allclose(out, test, atol=1e-3)
    expected = model.decode(model.encode(test, torch.tensor([0, 1])), 2)
    assert torch.allclose(out, expected, atol=1e-5)
