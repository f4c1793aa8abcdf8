"""3x3 convolution (stride 1, zero padding 1) by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray 2016).

Why: BPLF's "3x3" conditioner has a hidden-to-hidden 3x3 convolution that is ~85% of a training step. On CPU
oneDNN runs it as a direct convolution; Winograd computes each 4x4 output tile from a 6x6 input tile with 36
multiplications per input/output channel pair instead of 144, so the three big matrix products of a training
step (forward, input gradient, weight gradient) shrink 4x, at the price of cheap tile transforms. Same
function, same parameters (``WinogradConv3x3`` is an ``nn.Conv2d`` with the same state dict); the float32
result differs from the direct convolution by rounding only (relative ~1e-6 for this transform size). On GPUs
cuDNN already chooses Winograd or implicit GEMM itself, so ``WinogradConv3x3`` defers to ``F.conv2d`` there.

Layout: a tile-major (36, T, C) tensor, T = N * tiles_h * tiles_w, so that every transform is a single plain
matrix product over the leading 36 (or 16) axis and the channel products are one batched matrix product.
The backward pass is written out (the transforms' adjoints), which avoids autograd's generic and slow
backward of overlapping strided views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# Interpolation points 0, +-1, +-2, infinity.
_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_AT = [
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
]

_MATRICES: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


def _matrices(device, dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(B^T kron B^T (36x36), A^T kron A^T (16x36), G (6x3)) on a device/dtype, cached."""
    key = (device, dtype)
    if key not in _MATRICES:
        bt = torch.tensor(_BT, dtype=torch.float64)
        at = torch.tensor(_AT, dtype=torch.float64)
        g = torch.tensor(_G, dtype=torch.float64)
        _MATRICES[key] = tuple(m.to(device=device, dtype=dtype) for m in (torch.kron(bt, bt), torch.kron(at, at), g))
    return _MATRICES[key]


def _tiles(n: int) -> int:
    return -(-n // 4)


def _input_tiles(x_nhwc: Tensor, th: int, tw: int) -> Tensor:
    """(N, H, W, C) -> overlapping 6x6 tiles of the zero-padded image, (6, 6, N, th, tw, C) contiguous."""
    n, h, w, c = x_nhwc.shape
    xp = F.pad(x_nhwc, (0, 0, 1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))  # (N, 4th+2, 4tw+2, C)
    s_n, s_h, s_w, s_c = xp.stride()
    return xp.as_strided((6, 6, n, th, tw, c), (s_h, s_w, s_n, 4 * s_h, 4 * s_w, s_c)).contiguous()


def _overlap_add(d_tiles: Tensor, h: int, w: int) -> Tensor:
    """Adjoint of ``_input_tiles``: (6, 6, N, th, tw, C) tile gradients -> (N, H, W, C) image gradient."""
    _, _, n, th, tw, c = d_tiles.shape
    out = d_tiles.new_zeros(n, th + 1, 4, tw + 1, 4, c)  # blocks of 4x4 covering the padded image (and spare)
    # tile (t, u) row i lands in block t + i // 4 at offset i % 4; same for columns
    for rows, r_off in ((slice(0, 4), 0), (slice(4, 6), 1)):
        for cols, c_off in ((slice(0, 4), 0), (slice(4, 6), 1)):
            part = d_tiles[rows, cols].permute(2, 3, 0, 4, 1, 5)  # (N, th, i, tw, j, C)
            out[:, r_off : r_off + th, : part.shape[2], c_off : c_off + tw, : part.shape[4]] += part
    padded = out.view(n, 4 * (th + 1), 4 * (tw + 1), c)
    return padded[:, 1 : 1 + h, 1 : 1 + w]


class _WinogradConv3x3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        n, c, h, w = x.shape
        k = weight.shape[0]
        th, tw = _tiles(h), _tiles(w)
        t = n * th * tw
        btb, ata, g = _matrices(x.device, x.dtype)
        x_nhwc = x.permute(0, 2, 3, 1)
        v = (btb @ _input_tiles(x_nhwc, th, tw).view(36, t * c)).view(36, t, c)
        u = torch.einsum("ai,kcij,bj->abck", g, weight, g).reshape(36, c, k)
        m = torch.bmm(v, u)  # (36, T, K)
        y = (ata @ m.view(36, t * k)).view(4, 4, n, th, tw, k)
        y = y.permute(2, 3, 0, 4, 1, 5)  # (N, th, 4, tw, 4, K)
        if h != 4 * th or w != 4 * tw:
            y = y.reshape(n, 4 * th, 4 * tw, k)[:, :h, :w]
        # The (N, K, H, W) result in channels_last memory, written in one pass (a fresh tensor, not a view:
        # callers apply in-place ReLU to it).
        out = torch.empty((n, k, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        out_nhwc = out.permute(0, 2, 3, 1).view(y.shape)
        if bias is not None:
            torch.add(y, bias, out=out_nhwc)
        else:
            out_nhwc.copy_(y)
        ctx.save_for_backward(v, u, weight)
        ctx.shape = (n, c, h, w, k, th, tw)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable: a 2nd derivative raises
    def backward(ctx, grad_y: Tensor):
        v, u, weight = ctx.saved_tensors
        n, c, h, w, k, th, tw = ctx.shape
        t = n * th * tw
        btb, ata, g = _matrices(grad_y.device, grad_y.dtype)
        gy = grad_y.permute(0, 2, 3, 1)  # (N, H, W, K)
        if h != 4 * th or w != 4 * tw:
            gy = F.pad(gy, (0, 0, 0, 4 * tw - w, 0, 4 * th - h))
        gy = gy.reshape(n, th, 4, tw, 4, k).permute(2, 4, 0, 1, 3, 5).reshape(16, t * k)
        gm = (ata.t() @ gy).view(36, t, k)  # adjoint of the output transform
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            gv = torch.bmm(gm, u.transpose(1, 2))  # (36, T, C)
            g_tiles = (btb.t() @ gv.view(36, t * c)).view(6, 6, n, th, tw, c)
            grad_x = _overlap_add(g_tiles, h, w)
            grad_x = torch.empty(
                (n, c, h, w), dtype=grad_x.dtype, device=grad_x.device, memory_format=torch.channels_last
            ).copy_(grad_x.permute(0, 3, 1, 2))
        if ctx.needs_input_grad[1]:
            gu = torch.bmm(v.transpose(1, 2), gm).view(6, 6, c, k)  # (a, b, C, K)
            grad_w = torch.einsum("ai,abck,bj->kcij", g, gu, g)
            if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
                grad_w = grad_w.contiguous(memory_format=torch.channels_last)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for 3x3 kernels, stride 1, by Winograd F(4x4, 3x3).
    Returns a channels_last tensor."""
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) needs 3x3 kernels, got {tuple(weight.shape[2:])}")
    return _WinogradConv3x3.apply(x, weight, bias)


class WinogradConv3x3(nn.Conv2d):
    """``nn.Conv2d(in, out, 3, padding=1)`` computed by Winograd on CPU (direct convolution elsewhere).
    Same parameters and state dict as the plain layer."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, enabled: bool = True):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)
        self.enabled = enabled

    def forward(self, x: Tensor) -> Tensor:
        # Plain conv on GPUs, under autocast, and inside torch.func transforms (an autograd.Function without a
        # vmap rule cannot be transformed; the plain conv is the same function).
        if (
            not self.enabled
            or x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
            or torch._C._are_functorch_transforms_active()
        ):
            return super().forward(x)
        return winograd_conv3x3(x, self.weight, self.bias)
