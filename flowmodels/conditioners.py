"""Conditioner networks g: the arbitrary (non-invertible) functions that give a coupling its scales and shifts.

Couplings never build their own network: they receive a factory ``make(in_channels, out_channels)`` (see
``conditioner_factory``), so the paper's two choices, a test's tiny network or anything else plug in alike.

The two kinds of the BPLF paper's Table 3:

- ``"3x3"``: three 3x3 convolutions (BPLF's best);
- ``"3x3&1x1"``: 3x3, 1x1, 3x3 (Glow's own conditioner, and rosinality's glow-pytorch).

Both end in a zero-initialised convolution, so every coupling starts as (nearly) the identity and a freshly
built flow is a stack of actnorms and rotations.

Emotion conditioning (BPLF equation 3-8): the one-hot label is an extra input of every conditioner, i.e. of
every scale and shift: it is appended to the conditioner's input as constant channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from flowmodels.winograd import WinogradConv3x3

CONDITIONER_KINDS = ("3x3", "3x3&1x1")

# (in_channels, out_channels) -> module computing h = g(x, cond) of shape (N, out_channels, H, W)
ConditionerFactory = Callable[[int, int], nn.Module]


class ZeroConv2d(nn.Module):
    """3x3 convolution initialised to output exactly zero, with Glow's learned per-channel output gain
    exp(3 * scale) (lets the output grow fast once training needs it, without a large learning rate).

    Zero padding (rosinality pads the input with ones, which costs a full copy of the widest activation;
    the layer shapes and parameter count are the same)."""

    def __init__(self, in_channels: int, out_channels: int, gain_factor: float = 3.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))
        self.gain_factor = gain_factor

    def gain(self, y: Tensor) -> Tensor:
        """The learned output gain applied to the convolution's output ``y``."""
        return y * torch.exp(self.scale * self.gain_factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.gain(self.conv(x))


def _transforms_active() -> bool:
    """True inside torch.func transforms (vmap, grad, jacrev, jvp, ...): the in-place kernels step aside there,
    so the conditioner is plain differentiable PyTorch that every transform understands."""
    return torch._C._are_functorch_transforms_active()


class _ReLUInPlace(torch.autograd.Function):
    """ReLU in place on a convolution output, with the backward pass also in place. Only reached through
    ``relu_conv_chain``, which is what makes it safe.

    Why: the hidden activations are the widest tensors of a training step (64 x 512 x 24 x 24 floats = 75 MB
    in the benchmark). Autograd's ReLU backward allocates a new tensor of that size for the masked gradient, and
    on CPU the page faults of that first touch cost ~5x the masking itself (40 ms vs 6-8 ms measured).
    Masking the incoming gradient where it lies saves that. In-place is only correct when nobody else holds
    either tensor: the activation is created and consumed inside ``relu_conv_chain`` (no caller ever sees it)
    and the gradient is the fresh ``grad_input`` of the one convolution that consumed it. The backward still
    checks the gradient's layout and masks a copy when it is not a dense tensor of its own (an expanded
    gradient writes through to a shared element).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = torch.relu_(x)
        ctx.mark_dirty(out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        own = grad._base is None and (grad.is_contiguous() or grad.is_contiguous(memory_format=torch.channels_last))
        if not own or grad.shape != out.shape:
            return torch.ops.aten.threshold_backward(grad, out, 0.0)
        return torch.ops.aten.threshold_backward.grad_input(grad, out, 0.0, grad_input=grad)


def _is_own_dense(x: Tensor) -> bool:
    """A tensor that owns its memory and whose elements do not alias (a fresh convolution output)."""
    return x._base is None and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))


def relu_conv_chain(x: Tensor, convs) -> Tensor:
    """``convs[-1](relu(... relu(convs[0](x))))``: convolutions with a ReLU between consecutive ones, the ReLU
    in place in both passes (see ``_ReLUInPlace``). Safe by construction: every activation it modifies is
    made and consumed here, and only ``nn.Conv2d`` layers are accepted, because their backward hands the ReLU
    a gradient nobody else holds; any other module could keep the activation or share its gradient, and is
    refused. Inside torch.func transforms, under no_grad and on tensors that are not a convolution's own
    output, it is the plain out-of-place composition (same numbers)."""
    convs = list(convs)
    for conv in convs:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"relu_conv_chain takes nn.Conv2d layers only (got {type(conv).__name__})")
    h = convs[0](x)
    plain = _transforms_active()  # (checked first: vmap cannot query memory formats either)
    for conv in convs[1:]:
        if plain or not _is_own_dense(h):
            h = torch.relu(h)
        elif torch.is_grad_enabled() and h.requires_grad:
            h = _ReLUInPlace.apply(h)
        else:
            h = torch.relu_(h)
        h = conv(h)
    return h


class ConvConditioner(nn.Module):
    """g(x, cond): conv3x3 -> ReLU -> (conv3x3 | conv1x1) -> ReLU -> ZeroConv2d.

    ``hidden`` is the width of the two hidden layers (Glow and the benchmark: 512). With ``num_classes`` the
    one-hot condition (N, num_classes) is broadcast to constant channels and concatenated to the input.

    ``channels_last`` (default on) runs the convolutions in NHWC memory layout: on CPU oneDNN otherwise
    reorders every activation to and from its blocked format, which cost about a third of a training step in
    our measurements (bench/README.md). It changes no number, only the layout. ``winograd`` (default on)
    computes the "3x3" kind's hidden-to-hidden convolution by Winograd F(4x4, 3x3) on CPU
    (``flowmodels.winograd``): same parameters, rounding-level differences, about half the time.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 512,
        kind: str = "3x3&1x1",
        num_classes: int | None = None,
        channels_last: bool = True,
        winograd: bool = True,
    ):
        super().__init__()
        if kind not in CONDITIONER_KINDS:
            raise ValueError(f"conditioner kind must be one of {CONDITIONER_KINDS}, got {kind!r}")
        self.kind = kind
        self.num_classes = num_classes
        extra = num_classes or 0
        self.conv_in = nn.Conv2d(in_channels + extra, hidden, 3, padding=1)
        if kind == "3x3":
            self.conv_mid = WinogradConv3x3(hidden, hidden, enabled=winograd)
        else:
            self.conv_mid = nn.Conv2d(hidden, hidden, 1)
        self.conv_out = ZeroConv2d(hidden, out_channels)
        self.memory_format = torch.contiguous_format
        self.set_channels_last(channels_last)

    def set_channels_last(self, enabled: bool) -> None:
        """Switch the memory layout of the convolutions (and their weights)."""
        self.memory_format = torch.channels_last if enabled else torch.contiguous_format
        for conv in (self.conv_in, self.conv_mid, self.conv_out.conv):
            conv.weight.data = conv.weight.data.contiguous(memory_format=self.memory_format)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.num_classes:
            if cond is None:
                raise ValueError("this conditioner is label-conditional: pass the one-hot condition")
            n, _, h, w = x.shape
            x = torch.cat([x, cond[:, :, None, None].to(x.dtype).expand(n, -1, h, w)], dim=1)
        dtype = x.dtype
        if not _transforms_active():  # vmap cannot query memory formats; the layout changes no number
            x = x.contiguous(memory_format=self.memory_format)
        out = relu_conv_chain(x, (self.conv_in, self.conv_mid, self.conv_out.conv))
        # Under bf16 autocast the convolutions run in bf16; scales, shifts and log-determinants stay in the
        # flow's own precision.
        return self.conv_out.gain(out).to(dtype)


def conditioner_factory(
    kind: str = "3x3&1x1",
    hidden: int = 512,
    num_classes: int | None = None,
    channels_last: bool = True,
    winograd: bool = True,
) -> ConditionerFactory:
    """A ``make(in_channels, out_channels)`` building ``ConvConditioner``s of one kind and width."""
    if kind not in CONDITIONER_KINDS:
        raise ValueError(f"conditioner kind must be one of {CONDITIONER_KINDS}, got {kind!r}")

    def make(in_channels: int, out_channels: int) -> nn.Module:
        return ConvConditioner(in_channels, out_channels, hidden, kind, num_classes, channels_last, winograd)

    return make
