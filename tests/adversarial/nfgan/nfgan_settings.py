"""NFGAN settings narrow enough to train in seconds on one CPU core (imported by the NFGAN tests)."""

from __future__ import annotations

from pipelines.model_params import NfganParams

# Narrow copies of Tables 1-3 (same layers, fewer filters) and a small identity network: a step in tens of ms.
NARROW = {
    "encoder_widths": (8, 16, 32, 64),
    "encoder_hidden": 64,
    "decoder_widths": (64, 32, 16, 8),
    "discriminator_widths": (8, 16, 32, 32),
}


def narrow_params(train=None, losses=None, identity_train=None, **changes) -> NfganParams:
    """``NfganParams`` with narrow networks, CPU, and the given changes to the train / losses / identity sections."""
    base = NfganParams()
    identity = base.identity.replace(
        widths=(8, 16, 16, 16),
        embedding=32,
        train=base.identity.train.replace(
            **{"device": "cpu", "batch_size": 16, "warmup_steps": 5, "checkpoint_every": 0, **(identity_train or {})}
        ),
    )
    return base.replace(
        **{
            **NARROW,
            "identity": identity,
            "losses": base.losses.replace(**(losses or {})),
            "train": base.train.replace(**{"device": "cpu", "batch_size": 8, "checkpoint_every": 0, **(train or {})}),
            **changes,
        }
    )
