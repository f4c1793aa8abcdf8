"""Glow's multi-scale architecture: L levels of (squeeze, K flow steps, split), then a top prior.

The wiring lives here, apart from the layers: a level is a ``FlowSequence`` (squeeze + K steps), a step is
actnorm -> invertible 1x1 convolution -> coupling, and the coupling is whatever ``make_coupling`` builds.

    x (C, H, W) -> squeeze -> K steps -> split -> z_1 (2C, H/2, W/2)
                -> squeeze -> K steps -> split -> z_2 ...
                -> squeeze -> K steps          -> z_L (top), scored by the top prior

Latents are returned in that order, ``[z_1, ..., z_L]``: z_1 the finest, first factored out; z_L the last and
coarsest (paper 002 writes the same list as Z = {z_L ... z_1} and calls the last one z_1; here the index
follows the order of computation).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from flowmodels.distributions import TopPrior
from flowmodels.flows.base import Flow, FlowSequence, zero_logdet
from flowmodels.layers.actnorm import ActNorm
from flowmodels.layers.invconv import InvertibleConv1x1
from flowmodels.layers.split import Split
from flowmodels.layers.squeeze import Squeeze

# (num_channels, (height, width)) -> a coupling Flow for tensors of that shape
CouplingFactory = Callable[[int, tuple[int, int]], Flow]


class FlowStep(FlowSequence):
    """One step of flow: actnorm, invertible 1x1 convolution, coupling."""

    def __init__(self, num_channels: int, coupling: Flow, lu: bool = True):
        super().__init__([ActNorm(num_channels), InvertibleConv1x1(num_channels, lu=lu), coupling])

    @property
    def actnorm(self) -> ActNorm:
        return self.flows[0]

    @property
    def invconv(self) -> InvertibleConv1x1:
        return self.flows[1]

    @property
    def coupling(self) -> Flow:
        return self.flows[2]


class MultiScaleFlow(nn.Module):
    """The invertible map x -> [z_1, ..., z_L] with log-densities, built from parameters.

    ``image_shape``: (C, H, W), H and W divisible by 2**levels. ``make_coupling(C, (H, W))`` builds each
    step's coupling. ``num_classes``: the split and top priors get class-dependent offsets.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        levels: int,
        steps: int,
        make_coupling: CouplingFactory,
        num_classes: int | None = None,
        lu: bool = True,
    ):
        super().__init__()
        c, h, w = image_shape
        if levels < 1 or steps < 1:
            raise ValueError(f"need levels >= 1 and steps >= 1, got levels={levels}, steps={steps}")
        if h % (2**levels) or w % (2**levels):
            raise ValueError(f"image {h}x{w} cannot be squeezed {levels} times (needs multiples of {2**levels})")
        self.image_shape = (c, h, w)
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.latent_shapes: list[tuple[int, int, int]] = []
        for level in range(levels):
            c, h, w = c * 4, h // 2, w // 2
            self.levels.append(
                FlowSequence([Squeeze()] + [FlowStep(c, make_coupling(c, (h, w)), lu=lu) for _ in range(steps)])
            )
            if level < levels - 1:
                split = Split(c, num_classes)
                self.splits.append(split)
                self.latent_shapes.append((split.z_channels, h, w))
                c = split.kept_channels
        self.latent_shapes.append((c, h, w))
        self.top_prior = TopPrior((c, h, w), num_classes)

    def transform(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        """x -> (latents [z_1..z_L], sum of the split priors' log-densities, total log|det|).

        The top latent is *not* scored here (``top_prior.log_prob`` does that): the flow-latent classifier
        puts its conditional flow between the two.
        """
        latents: list[Tensor] = []
        log_p = zero_logdet(x)
        logdet = zero_logdet(x)
        h = x
        for i, level in enumerate(self.levels):
            h, ld = level(h, cond)
            logdet = logdet + ld
            if i < len(self.splits):
                h, z, lp = self.splits[i](h, cond)
                latents.append(z)
                log_p = log_p + lp
        latents.append(h)
        return latents, log_p, logdet

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """x -> (latents, log p(x)) with log p(x) the continuous log-density of x, shape (N,)."""
        latents, log_p, logdet = self.transform(x, cond)
        return latents, log_p + logdet + self.top_prior.log_prob(latents[-1], cond)

    def inverse(
        self,
        latents: list[Tensor | None],
        cond: Tensor | None = None,
        temperature: float = 1.0,
        n: int | None = None,
    ) -> Tensor:
        """[z_1..z_L] -> x. A latent given as ``None`` is drawn from its prior at ``temperature`` (all ``None``
        is sampling; then ``n`` says how many)."""
        if len(latents) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} latents, got {len(latents)}")
        top = latents[-1]
        if top is None:
            if n is None:
                n = next((z.shape[0] for z in latents if z is not None), None)
            if n is None:
                raise ValueError("sampling needs n")
            top = self.top_prior.sample(n, cond, temperature)
        h = top
        for i in reversed(range(len(self.levels))):
            if i < len(self.splits):
                h = self.splits[i].inverse(h, latents[i], cond, temperature)
            h, _ = self.levels[i].inverse(h, cond)
        return h
