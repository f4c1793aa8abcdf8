"""Shared numerics checks for the flowmodels tests (not a test module itself)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def brute_force_logdet(fn, x: Tensor) -> Tensor:
    """log|det d fn(x_i) / d x_i| for every sample i, from the full autograd Jacobian.

    ``fn`` maps a (1, ...) batch to (y, ...) and must be a bijection of the flattened sample.
    """
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]

        def flat(v, shape=xi.shape):
            return fn(v.reshape(shape))[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi.reshape(-1))
        assert jac.shape[0] == jac.shape[1], f"not square: {tuple(jac.shape)}"
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@torch.no_grad()
def perturb_parameters(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add Gaussian noise to every parameter: zero-initialised conditioners and priors otherwise make the
    couplings identities, and a log-determinant test would check nothing."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p))
    return module


def one_hot(labels, num_classes: int, dtype=torch.float64) -> Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels), num_classes).to(dtype)
