"""BiCoGAN's objective (seed paper, section 2; Jaiswal et al.):

    min_{G,E} max_D  V = E_x[log D(E(x), x)] + gamma * E_{(x,c)}[EFL(c, E_c(x))] + E_z~[log(1 - D(z~, G(z~)))]

with z~ = [z, c], EFL the cross-entropy of the encoder's label logits against the true label, and the EFL weight
gamma = min(alpha * e^(rho * t), phi) at epoch t. The EFL is taken on real (x, c) pairs only, as the objective
writes it: generated pairs' labels are the generator's input, and the adversarial term already ties them to x.

D maximises V: its loss is the negated adversarial part, -E[log sigma(D_real)] - E[log(1 - sigma(D_fake))]
(the EFL does not depend on D). G and E minimise V. ``generator_encoder_loss`` has both forms:

* "minimax": V's adversarial part itself, E[log sigma(D_real)] + E[log(1 - sigma(D_fake))];
* "non_saturating" (the default): the roles' labels swapped, -E[log(1 - sigma(D_real))] - E[log sigma(D_fake)]:
  the same fixed point with strong gradients while D still wins, which is how BiGAN's reference code trains G and E.

Every log-sigmoid is computed from logits (softplus), never from probabilities: no log(0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

AdversarialForm = Literal["non_saturating", "minimax"]
ADVERSARIAL_FORMS = ("non_saturating", "minimax")


def efl_weight(epoch: float, alpha: float, rho: float, phi: float) -> float:
    """gamma = min(alpha * e^(rho * epoch), phi): the EFL weight after ``epoch`` (fractional) epochs."""
    if alpha < 0 or phi < 0:
        raise ValueError(f"alpha and phi must be >= 0, got {alpha}, {phi}")
    exponent = rho * float(epoch)
    if exponent > 700:  # e^700 is near float's limit; the cap has long been reached
        return float(phi)
    return float(min(alpha * math.exp(exponent), phi))


@dataclass(frozen=True)
class EflSchedule:
    """The EFL weight's schedule: initial value ``alpha``, rate ``rho`` per epoch, cap ``phi``."""

    alpha: float
    rho: float
    phi: float

    def __call__(self, epoch: float) -> float:
        return efl_weight(epoch, self.alpha, self.rho, self.phi)


def extrinsic_factor_loss(label_logits: Tensor, labels: Tensor) -> Tensor:
    """EFL(c, E_c(x)): the mean cross-entropy of the encoder's label logits (N, K) against labels (N,)."""
    return F.cross_entropy(label_logits.float(), labels)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-E[log D(E(x), x)] - E[log(1 - D(z~, G(z~)))] from D's logits on real and generated tuples."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def generator_encoder_loss(real_logits: Tensor, fake_logits: Tensor, form: AdversarialForm) -> Tensor:
    """The adversarial part of G's and E's loss (see the module docstring for the two forms)."""
    real, fake = real_logits.float(), fake_logits.float()
    if form == "minimax":
        return -F.softplus(-real).mean() - F.softplus(fake).mean()
    if form == "non_saturating":
        return F.softplus(real).mean() + F.softplus(-fake).mean()
    raise ValueError(f"form must be one of {ADVERSARIAL_FORMS}, got {form!r}")


def bicogan_value(
    real_logits: Tensor, fake_logits: Tensor, label_logits: Tensor, labels: Tensor, gamma: float
) -> Tensor:
    """V(D, G, E) of the paper's objective on one batch (what D ascends and G, E descend in the minimax game)."""
    adversarial = -discriminator_loss(real_logits, fake_logits)
    return adversarial + gamma * extrinsic_factor_loss(label_logits, labels)
