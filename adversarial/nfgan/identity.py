"""The identity network NFGAN's identity-preserving loss measures with, trained here on the shards' subjects.

The paper uses a pretrained Light CNN (4 convolutions with Max-Feature-Map activations and 4 max-pools, trained on
tens of thousands of identities); its weights cannot be downloaded here, so ``IdentityNetwork`` is a small network of
the same shape trained in the pipeline to classify the training split's subjects (CK+ has 118, JAFFE 10, MMI's
sessions their subjects; FER2013's pseudo-subjects are left out, ``pipelines.pairs.PSEUDO_SUBJECT_SOURCES``). Each
block is conv 3x3 -> BN -> Max-Feature-Map (the elementwise max of two halves of the channels: Light CNN's
activation) -> 2x2 max-pool; then a fully connected Max-Feature-Map layer gives the embedding and a linear head the
subject logits. ``identity_features`` returns the last two layers (the last block's map and the embedding), what
eq. 6 sums over; ``IdentityFeatures`` wraps any chosen layers as a frozen extractor for the losses.

Validation is on *other* people (the val split's subjects, never seen in training): how well embedding distances
separate same from different people (ROC AUC of the cosine distance), which is what the loss relies on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmodels.data import ImageSet
from training.checkpoints import jsonable, load_checkpoint
from training.devices import resolve_device
from training.loop import StepReport
from training.schedule import WarmupSchedule, make_optimizer
from training.seeds import EpochBatches, derive_seed, seeded


def to_generator_scale(images: Tensor) -> Tensor:
    """uint8 faces -> float in [-1, 1]; floats are taken to be in that scale already."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()


class MaxFeatureMap(nn.Module):
    """Light CNN's activation: the elementwise maximum of the two halves of the channels (dim 1)."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.maximum(a, b)


class IdentityNetwork(nn.Module):
    """Subject logits for gray faces (N, 1, H, W): uint8, or float in [-1, 1]."""

    def __init__(
        self,
        image_size: Sequence[int],
        num_subjects: int,
        widths: Sequence[int],
        embedding: int,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        h, w = (int(v) for v in image_size)
        if min(h, w) < 2 ** len(widths) or h % 2 ** len(widths) or w % 2 ** len(widths):
            raise ValueError(f"{h}x{w} faces do not halve {len(widths)} times")
        self.image_size = (h, w)
        self.num_subjects = int(num_subjects)
        self.widths = tuple(int(v) for v in widths)
        self.embedding = int(embedding)
        self.class_names = None if class_names is None else tuple(class_names)
        blocks, previous = [], 1
        for width in self.widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(previous, 2 * width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(2 * width),
                    MaxFeatureMap(),
                    nn.MaxPool2d(2),
                )
            )
            previous = width
        self.blocks = nn.ModuleList(blocks)
        cells = (h >> len(self.widths)) * (w >> len(self.widths))
        self.fc = nn.Sequential(nn.Linear(previous * cells, 2 * self.embedding), MaxFeatureMap())
        self.head = nn.Linear(self.embedding, self.num_subjects)

    @property
    def config(self) -> dict[str, Any]:
        """``IdentityNetwork(**config)`` rebuilds this architecture."""
        return {
            "image_size": list(self.image_size),
            "num_subjects": self.num_subjects,
            "widths": list(self.widths),
            "embedding": self.embedding,
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    def feature_maps(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """Every block's output, then the embedding (N, embedding); with ``depth`` only the first ``depth`` of
        these (the later layers are not computed)."""
        depth = len(self.blocks) + 1 if depth is None else depth
        out, h = [], to_generator_scale(x)
        for block in self.blocks[:depth]:
            h = block(h)
            out.append(h)
        if depth > len(self.blocks):
            out.append(self.fc(h.flatten(1)))
        return out

    def identity_features(self, x: Tensor) -> list[Tensor]:
        """The last two layers (the last block's map and the embedding): eq. 6's phi_1, phi_2."""
        return self.feature_maps(x)[-2:]

    def embed(self, x: Tensor) -> Tensor:
        return self.feature_maps(x)[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))


class IdentityFeatures(nn.Module):
    """A frozen ``IdentityNetwork`` as a feature extractor of the losses: the layers at ``layers`` (indices into
    ``feature_maps``; (-2, -1) = ``identity_features``). It stays in eval mode: a fixed measuring network."""

    def __init__(self, network: IdentityNetwork, layers: Sequence[int]):
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.layers = tuple(int(i) for i in layers)

    def train(self, mode: bool = True) -> IdentityFeatures:
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        layers = len(self.network.blocks) + 1
        positions = [i % layers for i in self.layers]
        maps = self.network.feature_maps(x, depth=max(positions) + 1)
        return [maps[i] for i in positions]


def load_identity_set(shard_set_path, split: str, min_images: int, sources: Sequence[str] | None = None) -> ImageSet:
    """The faces of one split whose subject has at least ``min_images`` of them, labelled by subject (class names
    "source/subject", sorted), pseudo-subject sources left out. ``ImageSet.ids``: the shard row ids."""
    from pipelines.pairs import PSEUDO_SUBJECT_SOURCES
    from pipelines.shards import decode_pixels, read_shards, resolve_shard_set

    vdir = resolve_shard_set(Path(shard_set_path))
    wanted = None if sources is None else [s for s in sources if s not in PSEUDO_SUBJECT_SOURCES]
    if wanted is None:
        wanted = sorted({p.parent.name.split("=", 1)[1] for p in vdir.glob("split=*/source=*/part-*.parquet")})
        wanted = [s for s in wanted if s not in PSEUDO_SUBJECT_SOURCES]
    rows = read_shards(
        vdir, splits=[split], sources=wanted, columns=["id", "source", "subject", "pixels", "height", "width"]
    )
    keys = [f"{a}/{b}" for a, b in zip(rows.column("source").to_pylist(), rows.column("subject").to_pylist())]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    names = sorted(k for k, n in counts.items() if n >= min_images)
    index = {k: i for i, k in enumerate(names)}
    keep = [i for i, k in enumerate(keys) if k in index]
    h, w = (int(rows.column(c)[0].as_py()) for c in ("height", "width")) if rows.num_rows else (0, 0)
    faces = decode_pixels(rows.column("pixels").take(keep), h, w) if keep else np.zeros((0, h, w), np.uint8)
    labels = torch.tensor([index[keys[i]] for i in keep], dtype=torch.int64)
    ids = [rows.column("id")[i].as_py() for i in keep]
    return ImageSet(torch.from_numpy(faces[:, None].copy()), labels, f"identity/{vdir.name}/{split}", names, ids)


def verification_scores(embeddings: Tensor, subjects: Tensor) -> dict[str, float]:
    """Cosine distances of every pair of faces: ROC AUC of "same person" (the probability that a same-person pair
    is closer than a different-person pair, ties half) and the two medians."""
    e = F.normalize(embeddings.double(), dim=1)
    distance = 1.0 - e @ e.T
    upper = torch.triu(torch.ones_like(distance, dtype=torch.bool), diagonal=1)
    same = (subjects[:, None] == subjects[None, :]) & upper
    different = (subjects[:, None] != subjects[None, :]) & upper
    d_same, d_diff = distance[same], distance[different].sort().values
    if not len(d_same) or not len(d_diff):
        return {}
    above = len(d_diff) - torch.searchsorted(d_diff, d_same, right=True)
    ties = torch.searchsorted(d_diff, d_same, right=True) - torch.searchsorted(d_diff, d_same, right=False)
    auc = float((above.double() + 0.5 * ties.double()).sum() / (len(d_same) * len(d_diff)))
    return {"auc": auc, "same_distance": float(d_same.median()), "different_distance": float(d_diff.median())}


class IdentityTrainer:
    """The identity network, its optimizer and data: the ``training.Trainer`` of kind "identity"."""

    kind = "identity"

    def __init__(self, network: IdentityNetwork, train_set: ImageSet, val_set: ImageSet | None, config: Any):
        self.device = resolve_device(config.device)
        self.network, self.config = network.to(self.device).train(), config
        if train_set.image_shape != (1, *network.image_size):
            raise ValueError(
                f"the network takes faces {network.image_size}, {train_set.name} has {train_set.image_shape}"
            )
        if len(train_set) < config.batch_size:
            raise ValueError(f"{train_set.name}: {len(train_set)} faces, fewer than one batch of {config.batch_size}")
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) else None
        self.batches = EpochBatches(config.seed, len(train_set), config.batch_size)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.augment = config.augment.build()
        self.optimizer = make_optimizer(
            config.optimizer, network.parameters(), config.lr, weight_decay=config.weight_decay
        )
        self.schedule = WarmupSchedule(self.optimizer, config.lr, config.warmup_steps)
        self.data_prints = {
            "train": train_set.fingerprint(),
            "val": None if self.val_set is None else self.val_set.fingerprint(),
        }

    def initialize(self) -> str:
        return "random"

    def train_step(self, step: int) -> StepReport:
        cfg = self.config
        idx = self.batches(step)
        x = self.augment(self.train_set.images[idx], cfg.seed, step).to(self.device)
        y = self.train_set.labels[idx].to(self.device)
        lr = self.schedule.apply(step)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.network(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), math.inf)
        value = float(loss.detach())
        accuracy = float((logits.argmax(1) == y).float().mean())
        report = {"ce": value, "accuracy": accuracy}
        if not (math.isfinite(value) and math.isfinite(float(norm))):
            self.optimizer.zero_grad(set_to_none=True)
            return StepReport(report, len(idx), {"lr": lr}, skipped=True, detail=f"non-finite loss {value} or gradient")
        self.optimizer.step()
        return StepReport(report, len(idx), {"lr": lr})

    @torch.no_grad()
    def embed(self, images: Tensor, batch_size: int = 256) -> Tensor:
        was_training = self.network.training
        self.network.eval()
        out = [
            self.network.embed(images[i : i + batch_size].to(self.device)).cpu()
            for i in range(0, len(images), batch_size)
        ]
        self.network.train(was_training)
        return torch.cat(out)

    def validate(self, step: int) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        scores = verification_scores(self.embed(self.val_set.images), self.val_set.labels)
        return {f"val_verification_{k}" if k == "auc" else f"val_{k}": v for k, v in scores.items()} or None

    def state_dict(self) -> dict[str, Any]:
        return {
            "network_config": jsonable(self.network.config),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])

    def resume_key(self) -> dict[str, Any]:
        return {"train": self.config.trajectory(), "network": self.network.config, "data": self.data_prints}

    def divergence_advice(self) -> str:
        return f"a lower learning rate (lr is {self.config.lr:g}) or a longer warm-up (warmup_steps is {self.config.warmup_steps})"

    def final_model(self) -> IdentityNetwork:
        return self.network.eval()


def build_identity_network(train_set: ImageSet, identity: Any, seed: int) -> IdentityNetwork:
    """An ``IdentityNetwork`` for ``train_set``'s subjects as ``identity`` (``params.nfgan.identity``) says, its
    initial weights drawn from (seed, "model") with the global RNG left as it was."""
    with seeded(derive_seed(seed, "model")):
        return IdentityNetwork(
            train_set.image_shape[1:],
            len(train_set.class_names),
            identity.widths,
            identity.embedding,
            train_set.class_names,
        )


def identity_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> IdentityNetwork:
    """The identity network of a kind-"identity" checkpoint, in eval mode on ``device``."""
    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("kind") != IdentityTrainer.kind:
        raise ValueError(f"not an identity-network checkpoint (kind {state.get('kind')!r})")
    network = IdentityNetwork(**state["trainer"]["network_config"])
    network.load_state_dict(state["trainer"]["network"])
    return network.to(device).eval()
