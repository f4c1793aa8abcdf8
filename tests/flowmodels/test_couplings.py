import pytest
import torch
from flow_numerics import brute_force_logdet, one_hot, perturb_parameters

from flowmodels.conditioners import conditioner_factory
from flowmodels.layers import AdditiveCoupling, AffineCoupling, BiParallelLinearCoupling
from flowmodels.layers.couplings import part_sizes

NUM_CLASSES = 3


def _make(kind="3x3", conditional=False):
    return conditioner_factory(kind, hidden=8, num_classes=NUM_CLASSES if conditional else None)


def _couplings(conditional):
    make = _make(conditional=conditional)
    nc = NUM_CLASSES if conditional else None
    return {
        "additive": AdditiveCoupling(4, make),
        "affine": AffineCoupling(4, make),
        "bplf2": BiParallelLinearCoupling(4, make, parts=2, spatial_shape=(3, 3), num_classes=nc),
        "bplf3": BiParallelLinearCoupling(4, make, parts=3, spatial_shape=None, num_classes=nc),
        "bplf4_1x1": BiParallelLinearCoupling(4, _make("3x3&1x1", conditional), parts=4, num_classes=nc),
    }


CASES = [(name, cond) for cond in (False, True) for name in _couplings(False)]


@pytest.mark.parametrize("name,conditional", CASES)
def test_logdet_matches_brute_force_and_inverts(name, conditional):
    torch.manual_seed(0)
    layer = perturb_parameters(_couplings(conditional)[name].double(), scale=0.3)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    cond = one_hot([0, 2], NUM_CLASSES) if conditional else None
    y, logdet = layer(x, cond)
    assert not torch.allclose(y, x)  # perturbed: the coupling really transforms
    brute = torch.stack(
        [
            brute_force_logdet(lambda v, i=i: layer(v, None if cond is None else cond[i : i + 1]), x[i : i + 1])[0]
            for i in range(2)
        ]
    )
    assert torch.allclose(logdet, brute, atol=1e-8)
    x_back, inv_logdet = layer.inverse(y, cond)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(inv_logdet, -logdet, atol=1e-10)


@pytest.mark.parametrize("name", ["additive", "affine", "bplf2", "bplf3", "bplf4_1x1"])
def test_fresh_coupling_is_near_identity(name):
    """Zero-initialised last convolution: no shift, every transformed value scaled by sigmoid(2)."""
    layer = _couplings(False)[name].double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y, logdet = layer(x)
    s = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))
    if name == "additive":
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    elif name == "affine":  # half the channels scaled
        assert torch.equal(y[:, :2], x[:, :2]) and torch.allclose(y[:, 2:], x[:, 2:] * s)
        assert torch.allclose(logdet, torch.full((2,), 18 * torch.log(s).item(), dtype=torch.float64))
    else:  # BPLF: every part scaled, none left as the identity
        assert torch.allclose(y, x * s)
        assert torch.allclose(logdet, torch.full((2,), 36 * torch.log(s).item(), dtype=torch.float64))


def test_bi_parallel_dependence_structure():
    """Equation 3-6: y_1 depends on x_1 only (its scale/shift are constants); y_2 on x_1 and x_2."""
    torch.manual_seed(0)
    layer = perturb_parameters(BiParallelLinearCoupling(4, _make(), parts=2).double(), scale=0.3)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, 4, 3, 3))[0].flatten(), x.flatten())
    jac = jac.view(4, 9, 4, 9)
    first, second = slice(0, 2), slice(2, 4)
    assert torch.count_nonzero(jac[first, :, second, :]) == 0  # y_1 ignores x_2
    assert torch.count_nonzero(jac[second, :, first, :]) > 0  # y_2 reads x_1 through g_1
    # y_1 = s_1 * x_1 + mu_1 elementwise: its block is diagonal
    block = jac[first, :, first, :].reshape(18, 18)
    assert torch.equal(block, torch.diag(torch.diagonal(block)))


def test_label_changes_every_coupling_output():
    torch.manual_seed(0)
    for name, layer in _couplings(True).items():
        if name == "additive":
            continue
        layer = perturb_parameters(layer.double(), scale=0.3)
        x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
        y0, _ = layer(x, one_hot([0], NUM_CLASSES))
        y1, _ = layer(x, one_hot([1], NUM_CLASSES))
        assert not torch.allclose(y0, y1), name


def test_part_sizes():
    assert part_sizes(4, 2) == [2, 2]
    assert part_sizes(8, 3) == [3, 3, 2]
    assert sum(part_sizes(48, 5)) == 48
    with pytest.raises(ValueError):
        part_sizes(4, 1)
    with pytest.raises(ValueError):
        part_sizes(4, 5)
