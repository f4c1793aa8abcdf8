import pytest
import torch
from flow_numerics import one_hot, perturb_parameters

from flowmodels.conditioners import ConvConditioner, ZeroConv2d


@pytest.mark.parametrize("kind,mid_kernel", [("3x3", (3, 3)), ("3x3&1x1", (1, 1))])
def test_table3_layouts(kind, mid_kernel):
    g = ConvConditioner(2, 4, hidden=16, kind=kind)
    assert g.conv_in.kernel_size == (3, 3) and g.conv_in.out_channels == 16
    assert g.conv_mid.kernel_size == mid_kernel and g.conv_mid.in_channels == g.conv_mid.out_channels == 16
    assert g.conv_out.conv.kernel_size == (3, 3) and g.conv_out.conv.out_channels == 4


def test_starts_at_zero_output():
    g = ConvConditioner(2, 4, hidden=16)
    assert torch.count_nonzero(g(torch.randn(3, 2, 5, 5))) == 0
    assert torch.count_nonzero(ZeroConv2d(3, 2)(torch.randn(1, 3, 4, 4))) == 0


def test_channels_last_changes_layout_not_numbers():
    torch.manual_seed(0)
    g = perturb_parameters(ConvConditioner(2, 4, hidden=16, kind="3x3", channels_last=False).double())
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    plain = g(x)
    g.set_channels_last(True)
    assert g.conv_mid.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(g(x), plain, atol=1e-12)


def test_label_is_an_input():
    torch.manual_seed(0)
    g = perturb_parameters(ConvConditioner(2, 4, hidden=8, num_classes=3).double())
    assert g.conv_in.in_channels == 2 + 3  # one-hot appended as constant channels
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    assert not torch.allclose(g(x, one_hot([0], 3)), g(x, one_hot([2], 3)))
    with pytest.raises(ValueError):
        g(x)


def test_unknown_kind():
    with pytest.raises(ValueError):
        ConvConditioner(2, 4, kind="5x5")


# ----------------------------------------------------------------------------------- the in-place ReLU chain
from torch import nn  # noqa: E402

from flowmodels.conditioners import relu_conv_chain  # noqa: E402
from flowmodels.winograd import WinogradConv3x3  # noqa: E402


def _convs(channels_last: bool):
    torch.manual_seed(4)
    convs = [nn.Conv2d(2, 6, 3, padding=1), WinogradConv3x3(6, 6), nn.Conv2d(6, 3, 1)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for conv in convs:
        conv.double()
        conv.weight.data = conv.weight.data.contiguous(memory_format=fmt)
    return convs


def _reference(x, convs):
    h = convs[0](x)
    for conv in convs[1:]:
        h = conv(torch.relu(h))
    return h


def _grads(fn, x, convs, backward):
    x = x.detach().clone().requires_grad_()
    leaf = x
    for conv in convs:
        conv.zero_grad(set_to_none=True)
    out = fn(x, convs)
    backward(out)
    return out.detach(), leaf.grad.clone(), [conv.weight.grad.clone() for conv in convs]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    "backward",
    [
        pytest.param(lambda out: out.sum().backward(), id="broadcast-gradient"),  # an expanded ones tensor
        pytest.param(lambda out: out.square().sum().backward(), id="dense-gradient"),
        pytest.param(lambda out: (out + out).sum().backward(), id="output-used-twice"),
    ],
)
def test_relu_chain_matches_torch_relu(channels_last, backward):
    """Values and every gradient equal the out-of-place composition with torch.relu."""
    convs = _convs(channels_last)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    got = _grads(relu_conv_chain, x, convs, backward)
    want = _grads(_reference, x, convs, backward)
    assert torch.equal(got[0], want[0])
    assert torch.allclose(got[1], want[1], atol=1e-12)
    for a, b in zip(got[2], want[2]):
        assert torch.allclose(a, b, atol=1e-12)


def test_relu_chain_on_a_broadcast_input():
    """An expanded input (one image broadcast over the batch) reaches the leaf's gradient intact."""
    convs = _convs(False)
    leaf = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    relu_conv_chain(leaf.expand(3, -1, -1, -1), convs).square().sum().backward()
    got = leaf.grad.clone()
    leaf.grad = None
    _reference(leaf.expand(3, -1, -1, -1), convs).square().sum().backward()
    assert torch.allclose(got, leaf.grad, atol=1e-12)


def test_relu_chain_refuses_layers_that_could_share_the_activation():
    """Only convolutions: anything else could keep the activation or hand back a gradient someone holds."""
    with pytest.raises(TypeError, match="nn.Conv2d"):
        relu_conv_chain(torch.randn(1, 2, 4, 4), [nn.Conv2d(2, 2, 1), nn.Identity()])


def test_relu_chain_leaves_no_foreign_tensor_modified():
    """A gradient the caller holds (passed to backward) is not masked in place."""
    convs = _convs(False)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    out = relu_conv_chain(x, convs)
    held = torch.randn_like(out)
    kept = held.clone()
    out.backward(held)
    assert torch.equal(held, kept)


def test_conditioner_under_torch_func():
    """torch.func transforms run through the conditioner (in-place kernels step aside) and agree with autograd."""
    torch.manual_seed(5)
    g = perturb_parameters(ConvConditioner(2, 4, hidden=8, kind="3x3").double())
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    jac = torch.func.jacrev(g)(x)
    ref = torch.autograd.functional.jacobian(g, x)
    assert torch.allclose(jac, ref, atol=1e-10)
    batch = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    assert torch.allclose(torch.func.vmap(lambda xi: g(xi[None])[0])(batch), g(batch), atol=1e-12)
