"""BiCoGAN for emotion-conditioned faces (seed paper 003, after Jaiswal et al.), pure PyTorch.

- ``networks``: ``Generator`` G(z, c), ``Encoder`` E(x) -> (z, c logits), the joint ``Discriminator`` D(x, z, c);
  ``build_bicogan`` / ``build_seeded_bicogan`` -> ``BiCoGANNetworks``;
- ``losses``: the paper's objective (D's loss, G and E's loss, the extrinsic factor loss) and the EFL weight
  ``efl_weight`` = min(alpha e^(rho t), phi);
- ``classes``: ``ClassMap``, the six (paper) or seven emotions;
- ``training``: ``BiCoGANTrainer`` (``training.loop``'s Trainer, kind "bicogan"), ``trainer_from_params``;
- ``model``: ``BiCoGANModel`` (G and E: sample, encode, decode, edit, classify) and ``bicogan_from_checkpoint``.
"""

from adversarial.bicogan.classes import CLASS_SETS, ClassMap
from adversarial.bicogan.losses import (
    EflSchedule,
    bicogan_value,
    discriminator_loss,
    efl_weight,
    extrinsic_factor_loss,
    generator_encoder_loss,
)
from adversarial.bicogan.model import BiCoGANModel, bicogan_from_checkpoint
from adversarial.bicogan.networks import (
    BiCoGANNetworks,
    Discriminator,
    Encoder,
    Generator,
    build_bicogan,
    build_seeded_bicogan,
)
from adversarial.bicogan.training import BiCoGANTrainer, trainer_from_params

__all__ = [
    "CLASS_SETS",
    "BiCoGANModel",
    "BiCoGANNetworks",
    "BiCoGANTrainer",
    "ClassMap",
    "Discriminator",
    "EflSchedule",
    "Encoder",
    "Generator",
    "bicogan_from_checkpoint",
    "bicogan_value",
    "build_bicogan",
    "build_seeded_bicogan",
    "discriminator_loss",
    "efl_weight",
    "extrinsic_factor_loss",
    "generator_encoder_loss",
    "trainer_from_params",
]
