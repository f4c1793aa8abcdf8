import torch
from flow_numerics import brute_force_logdet, perturb_parameters

from flowmodels.layers import ActNorm


def _batch(seed=0, shape=(16, 3, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return 4.0 + 2.5 * torch.randn(shape, generator=g, dtype=torch.float64)


def test_first_batch_initialises_to_zero_mean_unit_variance():
    layer = ActNorm(3).double()
    assert not layer.initialized
    y, _ = layer(_batch())
    assert bool(layer.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.std(dim=(0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_initialised_layer_does_not_reinitialise_on_new_data():
    layer = ActNorm(3).double()
    layer(_batch(0))
    before = [p.clone() for p in layer.parameters()]
    layer(_batch(1) * 10)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))


def test_initialised_flag_is_a_buffer_that_survives_state_dict(tmp_path):
    layer = ActNorm(3).double()
    layer(_batch(0))
    assert "initialized" in layer.state_dict()
    torch.save(layer.state_dict(), tmp_path / "a.pt")
    fresh = ActNorm(3).double()
    fresh.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    x = _batch(5) * 3
    assert torch.equal(fresh(x)[0], layer(x)[0])  # the loaded scale is used, not a new init on x


def test_logdet_matches_brute_force_and_inverse():
    layer = perturb_parameters(ActNorm(2).double())
    layer.initialized.fill_(True)
    x = _batch(2, (3, 2, 3, 3))
    y, logdet = layer(x)
    assert torch.allclose(logdet, brute_force_logdet(layer, x), atol=1e-8)
    x_back, inv_logdet = layer.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-12)
    assert torch.allclose(inv_logdet, -logdet)
