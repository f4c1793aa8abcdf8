"""What the loop remembers between steps, and writes into every checkpoint so a resumed run continues exactly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LogWindow:
    """Sums of the losses over the finite steps since the last log line, and the images and compute time
    over all its steps (skipped ones included: they cost time too)."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    compute: float = 0.0

    def add(self, losses: Mapping[str, float]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def means(self, names: list[str]) -> dict[str, float | None]:
        """Each loss's mean over the window's finite steps; None for all of them when it had none."""
        return {k: (self.sums.get(k, 0.0) / self.count if self.count else None) for k in names}

    def images_per_s(self) -> float:
        return self.images / self.compute if self.compute > 0 else 0.0

    def reset(self) -> None:
        self.sums, self.count, self.images, self.compute = {}, 0, 0, 0.0


@dataclass
class TrainState:
    """The loop's state: the step reached, the log and validation history, the non-finite counters, the time
    spent, the open log window and the gauges last reported (learning rate, a loss weight...). ``to_dict`` /
    ``from_dict`` round-trip through a checkpoint; nothing else of the loop needs saving."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    val_history: list[dict] = field(default_factory=list)
    skipped_steps: int = 0
    consecutive_bad: int = 0
    skipped_at: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    loss_names: list[str] = field(default_factory=list)
    gauges: dict[str, float] = field(default_factory=dict)
    window: LogWindow = field(default_factory=LogWindow)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        values = dict(data)
        window = LogWindow(**values.pop("window"))
        return cls(window=window, **values)

    def last_logged(self, name: str) -> float | None:
        """The newest finite window mean of loss ``name`` in the history (None when there is none)."""
        for entry in reversed(self.history):
            value = entry.get(name)
            if value is not None and math.isfinite(value):
                return float(value)
        return None
