import torch
from flow_numerics import one_hot, perturb_parameters

from flowmodels.layers import Split


def test_fresh_prior_is_standard_normal():
    split = Split(4).double()
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    kept, z, log_p = split(x)
    assert torch.equal(kept, x[:, :2]) and torch.equal(z, x[:, 2:])
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(log_p, expected, atol=1e-12)


def test_log_density_is_the_gaussian_the_prior_network_predicts():
    split = perturb_parameters(Split(6, num_classes=3).double(), scale=0.2)
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    cond = one_hot([0, 1, 2, 1], 3)
    kept, z, log_p = split(x, cond)
    h = split.prior(kept) + split.label_shift(cond)
    mean, log_sd = h[:, :3], h[:, 3:]
    expected = torch.distributions.Normal(mean, log_sd.exp()).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(log_p, expected, atol=1e-10)


def test_inverse_reassembles_and_samples_at_temperature():
    split = perturb_parameters(Split(4, num_classes=2).double(), scale=0.2)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    cond = one_hot([0, 1], 2)
    kept, z, _ = split(x, cond)
    assert torch.equal(split.inverse(kept, z, cond), x)
    mean, _ = split.mean_log_sd(kept, cond)
    assert torch.allclose(split.inverse(kept, None, cond, temperature=0.0)[:, 2:], mean)
    # the label moves the prior
    other = one_hot([1, 0], 2)
    assert not torch.allclose(split.mean_log_sd(kept, other)[0], mean)
