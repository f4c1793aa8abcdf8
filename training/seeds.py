"""Random streams as pure functions of (seed, stream, index): what makes training and evaluation resumable.

No loop reads the global RNG: each random choice (the order of an epoch, the dequantisation noise of a step,
a GAN's latent batch, an augmentation) draws from a generator seeded by ``derive_seed(seed, stream, index)``,
so step s computes the same thing whether the run started at 0 or resumed at s.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor


def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for one random stream ("epoch", "noise", "init", ...) and index, from the run's seed."""
    digest = hashlib.sha256(f"emoflow/{int(seed)}/{stream}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, stream: str, index: int = 0) -> torch.Generator:
    """A CPU generator for one stream (draw on the CPU, then move: the numbers do not depend on the device)."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, index))


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the n training images in epoch ``epoch``."""
    return torch.randperm(n, generator=generator(seed, "epoch", epoch))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch: the last partial batch is dropped, so every step sees ``batch_size`` images."""
    return n // batch_size


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> Tensor:
    """The training-set indices of the global batch of (0-based) step ``step``."""
    spe = steps_per_epoch(n, batch_size)
    if spe < 1:
        raise ValueError(f"{n} training images cannot fill one batch of {batch_size}")
    epoch, k = divmod(step, spe)
    return epoch_permutation(seed, epoch, n)[k * batch_size : (k + 1) * batch_size]


class EpochBatches:
    """``batch_indices`` with the epoch's permutation cached (drawing it every step costs O(n))."""

    def __init__(self, seed: int, n: int, batch_size: int):
        self.seed, self.n, self.batch_size = seed, n, batch_size
        self.steps_per_epoch = steps_per_epoch(n, batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{n} training images cannot fill one batch of {batch_size}")
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, epoch_permutation(self.seed, epoch, self.n)
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size]


def uniform(seed: int, stream: str, index: int, shape: tuple[int, ...]) -> Tensor:
    """U(0, 1) numbers of one stream and index (e.g. a step's dequantisation offsets)."""
    return torch.rand(shape, generator=generator(seed, stream, index))


def normal(seed: int, stream: str, index: int, shape: tuple[int, ...]) -> Tensor:
    """N(0, 1) numbers of one stream and index (e.g. a GAN step's latent codes)."""
    return torch.randn(shape, generator=generator(seed, stream, index))


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG ``fork_rng`` must save and restore for work on ``device``."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with the global RNG seeded (for code that draws from it, such as ``model.sample``),
    restoring the RNG afterwards."""
    with torch.random.fork_rng(devices=rng_devices(torch.device(device))):
        torch.manual_seed(seed)
        yield
