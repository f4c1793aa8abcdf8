"""What the run functions return: plain dataclasses (JSON round-trip for the training one, which is also the
"nothing changed, not training again" record in the checkpoint folder)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from runs.datasets import DatasetRef


@dataclass
class TrainOutcome:
    """A trained, registered model: where its weights are and where MLflow has it.

    ``result``: ``training.TrainResult.as_dict()``; ``reused``: True when nothing that shapes the model had
    changed since an earlier run (``train_key``), which is returned instead of training again."""

    family: str
    variant: str
    registered_model: str
    model_version: str
    model_id: str
    run_id: str
    train_key: str
    data: DatasetRef
    pixel_column: str
    checkpoint: str
    result: dict[str, Any]
    wall_seconds: float
    reused: bool = False

    @property
    def dataset(self) -> str:
        return self.data.dataset

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = self.data.as_dict()
        return out

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], reused: bool | None = None) -> TrainOutcome:
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["data"] = DatasetRef.from_dict(data["data"])
        if reused is not None:
            values["reused"] = reused
        return cls(**values)

    @classmethod
    def load(cls, path: Path, reused: bool = True) -> TrainOutcome:
        return cls.from_dict(json.loads(Path(path).read_text()), reused=reused)


@dataclass
class EvalOutcome:
    """A scored model: ``metrics`` (test_* numbers and the family's own), ``figures`` (name -> PNG bytes, also
    logged to MLflow under ``evaluation/``), ``promotion`` (``runs.registry.PromotionDecision.as_dict()``),
    ``test_split``: what the numbers were computed on."""

    family: str
    variant: str
    registered_model: str
    model_version: str
    run_id: str
    test_split: str
    metrics: dict[str, float]
    figures: dict[str, bytes] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    confusion: dict[str, Any] | None = None  # {"classes": [...], "confusion": [[...]]} when it classifies

    @property
    def promoted(self) -> bool:
        return bool(self.promotion.get("promoted"))

    def summary(self) -> dict[str, Any]:
        """Everything but the pictures (JSON-able)."""
        out = asdict(self)
        out.pop("figures")
        out["figures"] = sorted(self.figures)
        return out
