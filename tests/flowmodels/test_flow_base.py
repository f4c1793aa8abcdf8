import torch
from flow_numerics import brute_force_logdet, perturb_parameters

from flowmodels.conditioners import conditioner_factory
from flowmodels.flows import FlowSequence
from flowmodels.layers import ActNorm, AffineCoupling, InvertibleConv1x1, Squeeze
from flowmodels.multiscale import FlowStep


def test_sequence_adds_logdets_and_inverts_in_reverse_order():
    torch.manual_seed(0)
    make = conditioner_factory("3x3", hidden=8)
    seq = FlowSequence([Squeeze(), ActNorm(4), InvertibleConv1x1(4), AffineCoupling(4, make)]).double()
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    seq(x)  # actnorm data init
    perturb_parameters(seq, 0.2)
    y, logdet = seq(x)
    parts, h = [], x
    for flow in seq:
        h, ld = flow(h)
        parts.append(ld)
    assert torch.allclose(y, h) and torch.allclose(logdet, sum(parts))
    assert torch.allclose(logdet, brute_force_logdet(seq, x), atol=1e-8)
    x_back, inv_logdet = seq.inverse(y)
    assert torch.allclose(x_back, x, atol=1e-10) and torch.allclose(inv_logdet, -logdet)


def test_flow_step_is_actnorm_then_invconv_then_coupling():
    step = FlowStep(4, AffineCoupling(4, conditioner_factory("3x3&1x1", hidden=8)))
    assert isinstance(step.actnorm, ActNorm) and isinstance(step.invconv, InvertibleConv1x1)
    assert isinstance(step.coupling, AffineCoupling) and len(step) == 3
