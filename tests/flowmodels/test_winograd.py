"""Winograd F(4x4, 3x3): the same convolution as F.conv2d(padding=1), values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from flowmodels.winograd import WinogradConv3x3, winograd_conv3x3


@pytest.mark.parametrize(
    "shape", [(2, 3, 4, 8, 8), (1, 2, 5, 6, 6), (2, 4, 3, 7, 5), (1, 1, 1, 1, 1), (3, 5, 2, 12, 13)]
)
def test_matches_direct_convolution_in_double(shape):
    n, c, k, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g)
    weight = torch.randn(k, c, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(k, dtype=torch.float64, generator=g)
    y = winograd_conv3x3(x, weight, bias)
    assert y.shape == (n, k, h, w) and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, F.conv2d(x, weight, bias, padding=1), atol=1e-10)
    assert torch.allclose(winograd_conv3x3(x, weight), F.conv2d(x, weight, padding=1), atol=1e-10)


def test_gradients_are_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(winograd_conv3x3, (x, weight, bias))
    assert torch.autograd.gradcheck(lambda a, b: winograd_conv3x3(a, b), (x, weight))


def test_float32_error_is_rounding_level_at_the_benchmark_width():
    torch.manual_seed(0)
    conv = WinogradConv3x3(64, 64)
    x = torch.randn(2, 64, 12, 12).to(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    y.square().sum().backward()
    grad_x, grad_w = x.grad.clone(), conv.weight.grad.clone()
    x.grad, conv.weight.grad = None, None
    ref = F.conv2d(x, conv.weight, conv.bias, padding=1)
    ref.square().sum().backward()
    for a, b in ((y, ref), (grad_x, x.grad), (grad_w, conv.weight.grad)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_output_can_be_modified_in_place():
    """The conditioners apply ReLU in place to it: it must be a fresh tensor, not a view."""
    conv = WinogradConv3x3(2, 3)
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    y = torch.relu_(conv(x))
    y.sum().backward()
    assert x.grad is not None


def test_same_parameters_as_a_plain_convolution_and_switchable():
    plain = torch.nn.Conv2d(4, 6, 3, padding=1)
    wino = WinogradConv3x3(4, 6)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in wino.state_dict().items()}
    wino.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 9, 9)
    assert torch.allclose(wino(x), plain(x), atol=1e-5)
    wino.enabled = False
    assert torch.equal(wino(x), plain(x))
    with pytest.raises(ValueError):
        winograd_conv3x3(x, torch.randn(6, 4, 5, 5))


def test_second_derivative_raises_instead_of_lying():
    """The backward is hand-written and not itself differentiable: double backward must refuse, not return
    a wrong Hessian-vector product (gradgradcheck used to fail silently)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    (grad_x,) = torch.autograd.grad(winograd_conv3x3(x, weight).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|marked with @once_differentiable"):
        grad_x.sum().backward()
    with pytest.raises(RuntimeError):
        torch.autograd.gradgradcheck(winograd_conv3x3, (x, weight))


def test_torch_func_transforms_use_the_plain_convolution():
    """Inside torch.func (vmap, jacrev) the layer is F.conv2d, so transforms work and agree with autograd."""
    torch.manual_seed(3)
    conv = WinogradConv3x3(2, 2).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    per_sample = torch.func.vmap(lambda xi: conv(xi[None])[0])(x)
    assert torch.allclose(per_sample, F.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-12)
    jac = torch.func.jacrev(lambda xi: conv(xi))(x[:1])
    ref = torch.autograd.functional.jacobian(lambda xi: winograd_conv3x3(xi, conv.weight, conv.bias), x[:1])
    assert torch.allclose(jac, ref, atol=1e-10)
