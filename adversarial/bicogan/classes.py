"""The emotion class set BiCoGAN generates: the seed paper's six (disgust dropped: under 10 % of the other
classes' counts in FER2013) or all seven of ``pipelines.labels.EMOTIONS``, in the scheme's order."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowmodels.data import ImageSet
from pipelines.labels import EMOTION_INDEX, EMOTIONS

CLASS_SETS: dict[str, tuple[str, ...]] = {
    "six": tuple(e for e in EMOTIONS if e != "disgust"),
    "seven": EMOTIONS,
}


@dataclass(frozen=True)
class ClassMap:
    """The chosen emotions (``names``, indexed 0..K-1) and the map from the 7-emotion labels to them."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in EMOTION_INDEX]
        if unknown or len(set(self.names)) != len(self.names) or len(self.names) < 2:
            raise ValueError(f"a class set is at least two distinct emotions of {EMOTIONS}, got {self.names}")

    @classmethod
    def named(cls, classes: str) -> ClassMap:
        """``"six"`` (the seed paper's) or ``"seven"``."""
        if classes not in CLASS_SETS:
            raise ValueError(f"classes must be one of {sorted(CLASS_SETS)}, got {classes!r}")
        return cls(CLASS_SETS[classes])

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(e for e in EMOTIONS if e not in self.names)

    def lookup(self) -> torch.Tensor:
        """(7,) int64: the class index of each 7-emotion label, -1 for a dropped emotion."""
        table = torch.full((len(EMOTIONS),), -1, dtype=torch.long)
        for k, name in enumerate(self.names):
            table[EMOTION_INDEX[name]] = k
        return table

    def index(self, label: int | str) -> int:
        """A class index from a class index or an emotion name (which must be in the set)."""
        if isinstance(label, str):
            if label not in self.names:
                raise ValueError(f"emotion {label!r} is not in this model's class set {list(self.names)}")
            return self.names.index(label)
        k = int(label)
        if not 0 <= k < len(self.names):
            raise ValueError(f"class index {k} outside 0..{len(self.names) - 1} ({list(self.names)})")
        return k

    def apply(self, images: ImageSet) -> tuple[ImageSet, int]:
        """``images`` in the class set: dropped emotions' images left out, labels renumbered 0..K-1. Returns the
        set and how many images were left out. A set already in this class set passes unchanged."""
        if images.labels is None:
            raise ValueError(f"{images.name}: BiCoGAN needs labelled images")
        if images.class_names == self.names:
            return images, 0
        if images.class_names != EMOTIONS:
            raise ValueError(
                f"{images.name}: labels must be the 7-emotion scheme {EMOTIONS} (or this class set), "
                f"got {images.class_names}"
            )
        mapped = self.lookup()[images.labels]
        keep = torch.nonzero(mapped >= 0).squeeze(1)
        ids = None if images.ids is None else [images.ids[i] for i in keep.tolist()]
        kept = ImageSet(images.images[keep], mapped[keep], images.name, self.names, ids)
        return kept, len(images) - len(keep)
