"""What a model trains and is scored on: a ``DatasetRef`` names one dataset at one version and loads its splits.

- the EmotionSet: a shard set (``pipelines.shards``), identified by its shard version, optionally narrowed to
  some sources (the cross-dataset matrix trains on one source at a time);
- MNIST (the second dataset of the BPLF paper's Table 3): the idx files, identified by their content hash;
  28x28 zero-padded to 32x32 so three levels of squeezing divide evenly; "val" is the last 5,000 training
  digits; the ``_svd`` column is truncated as the settings' ``data.svd`` says, and those settings are part of
  that column's identity (``identity``), so changing data.svd.rank retrains the MNIST ``_svd`` models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowmodels.data import ImageSet, load_mnist_partition, load_shard_split
from pipelines.params import Params, SvdParams
from pipelines.shards import resolve_shard_set
from pipelines.versioning import hash_raw_inputs

DATASETS = ("emotionset", "mnist")
MNIST_SIDE = 32  # 28x28 zero-padded to 32x32 so three levels of squeezing divide evenly


@dataclass(frozen=True)
class DatasetRef:
    """``dataset``: "emotionset" or "mnist"; ``version``: the shard version or the MNIST content hash;
    ``path``: the shard-set folder or the MNIST root; ``image_shape``: (C, H, W); ``sources``: EmotionSet
    sources to read (None: all); ``svd``: MNIST's SVD settings (None for the EmotionSet, whose shards carry
    their own ``pixels_svd``)."""

    dataset: str
    version: str
    path: str
    image_shape: tuple[int, int, int]
    sources: tuple[str, ...] | None = None
    svd: dict[str, Any] | None = None

    def load(self, split: str, column: str = "pixels") -> ImageSet:
        if self.dataset == "emotionset":
            return load_shard_split(self.path, split, column=column, sources=self.sources)
        svd = SvdParams.model_validate(self.svd) if self.svd is not None else None
        return load_mnist_partition(self.path, split, pad_to=MNIST_SIDE, column=column, svd=svd)

    def identity(self, column: str = "pixels") -> dict[str, Any]:
        """What identifies the images of ``column``: training keys hash it."""
        identity: dict[str, Any] = {"dataset": self.dataset, "version": self.version, "sources": self.sources}
        if self.dataset == "mnist" and column == "pixels_svd":
            identity["svd"] = self.svd
        return identity

    def split_key(self, split: str) -> str:
        """``<dataset>/<version>[/<sources>]/<split>``: scores compare only on equal split keys."""
        narrowed = f"/{'+'.join(self.sources)}" if self.sources else ""
        return f"{self.dataset}/{self.version}{narrowed}/{split}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetRef:
        values = dict(data)
        values["image_shape"] = tuple(values["image_shape"])
        values["sources"] = None if values.get("sources") is None else tuple(values["sources"])
        return cls(**values)

    def narrowed(self, sources: tuple[str, ...]) -> DatasetRef:
        if self.dataset != "emotionset":
            raise ValueError("only the EmotionSet has sources")
        return DatasetRef(self.dataset, self.version, self.path, self.image_shape, tuple(sources), None)


def require_emotionset(data: DatasetRef, what: str) -> None:
    """A clear error when a family that models emotions is given another dataset (MNIST)."""
    if data.dataset != "emotionset":
        raise ValueError(f"{what} trains on the emotionset only, not {data.dataset}")


def emotionset_ref(shards: Path, sources: tuple[str, ...] | None = None) -> DatasetRef:
    """A shard set (a version folder, or a shards root whose ``current`` file names one)."""
    path = resolve_shard_set(Path(shards))
    manifest = json.loads((path / "manifest.json").read_text())
    height, width = manifest["image_size"]
    present = tuple(sorted(manifest["by_source"]))
    if sources is not None:
        missing = sorted(set(sources) - set(present))
        if missing:
            raise ValueError(f"shard set {manifest['version']} has no rows of {missing} (it holds {list(present)})")
        sources = tuple(sorted(sources))
        if sources == present:
            sources = None
    return DatasetRef("emotionset", manifest["version"], str(path), (1, int(height), int(width)), sources)


def enabled_sources_ref(settings: Params, shards: Path) -> DatasetRef:
    """A shard set narrowed to the settings' enabled sources (``data.sources``) among those it holds."""
    ref = emotionset_ref(shards)
    present = json.loads((Path(ref.path) / "manifest.json").read_text())["by_source"]
    wanted = tuple(s for s in settings.data.sources if s in present)
    if not wanted:
        raise ValueError(
            f"shard set {ref.version} holds none of the enabled sources {list(settings.data.sources)} (it has {sorted(present)})"
        )
    return emotionset_ref(shards, wanted)


def mnist_ref(settings: Params) -> DatasetRef:
    root = settings.mnist.root_path()
    version = hash_raw_inputs(root)[:16]
    return DatasetRef("mnist", version, str(root), (1, MNIST_SIDE, MNIST_SIDE), None, settings.data.svd.model_dump())


def key_of(material: dict[str, Any]) -> str:
    """A short content key for a JSON-able mapping (training keys, run keys)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]
