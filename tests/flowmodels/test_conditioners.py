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
