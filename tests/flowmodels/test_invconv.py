import pytest
import torch
from flow_numerics import brute_force_logdet, perturb_parameters

from flowmodels.layers import InvertibleConv1x1


@pytest.mark.parametrize("lu", [True, False])
def test_starts_as_a_rotation(lu):
    torch.manual_seed(0)
    layer = InvertibleConv1x1(6, lu=lu)
    w = layer.weight_matrix().double()
    assert torch.allclose(w @ w.T, torch.eye(6, dtype=torch.float64), atol=1e-5)
    assert abs(float(layer.log_abs_det().detach())) < 1e-5


@pytest.mark.parametrize("lu", [True, False])
def test_logdet_matches_brute_force_and_inverse(lu):
    torch.manual_seed(1)
    layer = perturb_parameters(InvertibleConv1x1(4, lu=lu).double(), scale=0.3)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y, logdet = layer(x)
    assert abs(float(logdet[0].detach())) > 1e-2  # no longer a rotation: the check below is not 0 == 0
    assert torch.allclose(logdet, brute_force_logdet(layer, x), atol=1e-8)
    x_back, inv_logdet = layer.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10)
    assert torch.allclose(inv_logdet, -logdet)


def test_lu_log_abs_det_equals_slogdet_of_the_weight():
    torch.manual_seed(2)
    layer = perturb_parameters(InvertibleConv1x1(8).double(), scale=0.5)
    assert torch.allclose(layer.log_abs_det(), torch.linalg.slogdet(layer.weight_matrix())[1], atol=1e-10)


def test_lu_layer_keeps_permutation_and_sign_in_state_dict():
    torch.manual_seed(3)
    a = InvertibleConv1x1(5)
    b = InvertibleConv1x1(5)
    b.load_state_dict(a.state_dict())
    assert {"perm", "sign_s", "lower", "upper", "log_s"} <= set(a.state_dict())
    assert torch.equal(a.weight_matrix(), b.weight_matrix())
