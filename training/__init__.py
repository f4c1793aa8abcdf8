"""The deterministic training loop every model family shares (pure PyTorch, no Dagster, no MLflow).

A family supplies a ``Trainer`` (``training.loop``): one optimisation step as a pure function of
(seed, step), its state as a dict, and optionally a validation pass. ``run_training`` drives it: budgets by
steps, epochs or seconds; a non-finite guard (a trainer reports a skipped update; too many in a row stop
the run with the family's advice); log windows, validation and checkpoints at fixed cadences; exact resume
from ``last.pt``; progress events and a tqdm bar. Flows, the emotion judge, BiCoGAN and NFGAN all train
through it, so they share one checkpoint format and one resume guarantee:

    an interrupted run resumed from its last checkpoint ends where an uninterrupted run ends.

Modules: ``seeds`` (random streams of (seed, step)), ``devices`` (device choice, torch.distributed
agreement), ``checkpoints`` (atomic files), ``schedule`` (optimizers and warm-up), ``state`` (what the loop
remembers), ``loop`` (the loop).
"""

from training.checkpoints import load_checkpoint
from training.devices import resolve_device
from training.loop import LoopConfig, StepReport, Trainer, TrainingDiverged, TrainResult, run_training
from training.seeds import derive_seed

__all__ = [
    "LoopConfig",
    "StepReport",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "derive_seed",
    "load_checkpoint",
    "resolve_device",
    "run_training",
]
