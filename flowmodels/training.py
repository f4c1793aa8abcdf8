"""The training loop (pure PyTorch): budgets, warm-up, clipping, a NaN/inf guard, checkpoints, exact resume, and
DistributedDataParallel when launched under ``torchrun`` (``flowmodels.train_main``).

Determinism is the organising idea: every random choice is a pure function of (seed, step), so a run that is
interrupted after a checkpoint and resumed computes what an uninterrupted run computes.

- data order: epoch e is a permutation of the training set drawn from a generator seeded by (seed, e); step s
  of epoch e = s // steps_per_epoch takes the next ``batch_size`` images of it (the last partial batch of an
  epoch is dropped, so every step sees exactly ``batch_size`` images; ``batch_indices``);
- dequantisation noise: drawn for the whole global batch from a generator seeded by (seed, s) (``step_noise``);
- actnorm's data-dependent initialisation: a batch of ``init_batch`` images chosen by a generator seeded by
  (seed, "init"), dequantised with noise seeded the same way;
- the learning rate: a pure function of s (linear warm-up to ``lr`` over ``warmup_steps``, then constant).

A checkpoint holds the model, the optimizer, the schedule, the step, the config, the history so far, the skip
counters and the elapsed time, and nothing else is needed: no global RNG state is read anywhere in the loop.

Distributed: with N processes (``torch.distributed`` initialised, e.g. by ``torchrun``), the *global* batch is
``batch_size`` and rank r takes the r-th of N equal slices of every global batch (indices and noise), so N
processes compute what one process computes with the same global batch (DDP averages the gradients of the
equal slices: the gradient of the global mean). Actnorm is initialised on rank 0 only, and DDP's constructor
broadcasts rank 0's parameters *and buffers* (the "initialized" flags included; ``forward_sync_buffers=False``
only skips the re-broadcast before every forward);
``train`` then checks that every rank holds the same state (sha256) and that every actnorm says initialised
before the first step. All ranks agree on skipping a non-finite step and on stopping at a time budget (one
small all-reduce per step). Rank 0 writes the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from flowmodels.data import ImageSet
from flowmodels.layers.actnorm import ActNorm
from flowmodels.model import FlowModel

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emoflow-flow-checkpoint/1"
OPTIMIZERS = ("adam", "adamax", "adamw")

# The fields that shape the trajectory: a checkpoint resumes only under the same values. The others (budgets,
# cadences, device, the skip tolerance) may change between the interrupted run and the resumed one: raising
# max_steps continues a finished run, exactly as if it had been asked for more steps from the start.
TRAJECTORY_FIELDS = ("optimizer", "lr", "warmup_steps", "grad_clip", "batch_size", "bf16", "seed", "init_batch")


# --- configuration ---------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Every field is settable from params.yaml's ``train:`` section (``from_mapping``).

    ``batch_size`` is the global batch (split over the ranks of a distributed run). Budget: training stops at
    whichever of ``max_steps`` / ``max_epochs`` / ``max_seconds`` comes first (at least one must be set).
    ``checkpoint_every``: steps between checkpoints (0: only at the end). ``val_every``: steps between
    validation passes (0: only at the end). ``max_bad_steps``: consecutive non-finite steps before
    ``TrainingDiverged``. ``device``: "auto" (CUDA when present), "cpu", "cuda", "cuda:N".
    ``keep_checkpoints``: how many ``step-*.pt`` files to keep (None: all; ``last.pt`` always stays).
    """

    optimizer: str = "adamax"
    lr: float = 1e-3
    warmup_steps: int = 200
    grad_clip: float = 50.0
    batch_size: int = 64
    max_steps: int | None = 2000
    max_epochs: int | None = None
    max_seconds: float | None = None
    checkpoint_every: int = 500
    val_every: int = 0
    log_every: int = 10
    bf16: bool = False
    seed: int = 0
    max_bad_steps: int = 10
    device: str = "auto"
    init_batch: int = 256
    keep_checkpoints: int | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> TrainConfig:
        """A config from a mapping (params.yaml's ``train:``); unknown keys are refused, numbers written as
        strings ("1e-3", which YAML leaves a string) are converted, everything is validated."""
        mapping = dict(mapping or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - set(known))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        values = {name: _coerce(name, value, known[name].type) for name, value in mapping.items()}
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("warmup_steps", "checkpoint_every", "val_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "log_every", "max_bad_steps", "init_batch"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip < 0:
            problems.append(f"grad_clip must be >= 0 (0 or null: no clipping), got {self.grad_clip}")
        for name in ("max_steps", "max_epochs", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                problems.append(f"{name} must be > 0 or null, got {value}")
        if self.max_steps is None and self.max_epochs is None and self.max_seconds is None:
            problems.append("set at least one budget: max_steps, max_epochs or max_seconds")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            problems.append(f"keep_checkpoints must be >= 1 or null, got {self.keep_checkpoints}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            problems.append(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    text = str(annotation)
    if value is None:
        if "None" not in text:
            raise ValueError(f"training setting {name} cannot be null")
        return None
    try:
        if text.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if text.startswith("int"):
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
            if number != int(number):
                raise TypeError
            return int(number)
        if text.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if text.startswith("str"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ValueError(f"training setting {name}: expected {text}, got {value!r}") from None
    return value


@dataclass
class TrainResult:
    """What a training run did; ``as_dict()`` is JSON-serialisable.

    ``seconds``: wall time of the whole run (resumed segments added up); ``images_per_s``: this session's
    training throughput (images through forward+backward per second of step time, validation and checkpoint
    writing excluded); ``train_bpd``: the mean bits/dim of the last logged window; ``history``: one entry per
    log step {"step", "bpd", "lr", "images_per_s", "elapsed", "epoch", "skipped_steps"} (``bpd`` is the mean
    over the window's finite steps, None if it had none).
    """

    steps: int
    epochs: float
    seconds: float
    images_per_s: float
    train_bpd: float | None
    val_bpd: float | None
    history: list[dict]
    val_history: list[dict]
    skipped_steps: int
    stopped_by: str
    checkpoint: str
    resumed_from_step: int | None
    device: str
    world_size: int
    skipped_at: list[int] = field(default_factory=list)
    steps_per_epoch: int = 0
    initialization: str = "data"  # "data" (actnorm from the seeded init batch), "given", "checkpoint"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient norm."""


# --- pure functions of (seed, step) ----------------------------------------------------------------------------
def derive_seed(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for one random stream ("epoch", "noise", "init", ...) and index, from the run's seed."""
    digest = hashlib.sha256(f"emoflow/{int(seed)}/{stream}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _generator(seed: int, stream: str, index: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream, index))


def epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    """The order of the n training images in epoch ``epoch``."""
    return torch.randperm(n, generator=_generator(seed, "epoch", epoch))


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> Tensor:
    """The training-set indices of the global batch of (0-based) step ``step``."""
    spe = steps_per_epoch(n, batch_size)
    if spe < 1:
        raise ValueError(f"{n} training images cannot fill one batch of {batch_size}")
    epoch, k = divmod(step, spe)
    return epoch_permutation(seed, epoch, n)[k * batch_size : (k + 1) * batch_size]


def step_noise(seed: int, step: int, shape: tuple[int, ...]) -> Tensor:
    """The dequantisation offsets u ~ U(0, 1) of the global batch of step ``step`` (shape (B, C, H, W))."""
    return torch.rand(shape, generator=_generator(seed, "noise", step))


def init_indices(seed: int, n: int, size: int) -> Tensor:
    """The images of the actnorm initialisation batch."""
    return torch.randperm(n, generator=_generator(seed, "init"))[: min(size, n)]


def warmup_lr(step: int, lr: float, warmup_steps: int) -> float:
    """The learning rate of (0-based) step ``step``: linear from lr / warmup_steps to lr, then constant."""
    if warmup_steps <= 0:
        return lr
    return lr * min(1.0, (step + 1) / warmup_steps)


class WarmupSchedule:
    """Sets the optimizer's learning rate to ``warmup_lr(step)`` before every step; ``state_dict`` for
    checkpoints (the rate is a pure function of the step, so the state is just the step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, warmup_steps: int):
        self.optimizer = optimizer
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.step_index = 0

    def apply(self, step: int) -> float:
        self.step_index = step
        lr = warmup_lr(step, self.lr, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "linear_warmup_constant", "lr": self.lr, "warmup_steps": self.warmup_steps, "step": self.step_index}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step_index = int(state["step"])


def build_seeded_model(seed: int, variant: str, image_shape, num_classes: int | None = None, **hparams) -> FlowModel:
    """``build_model`` with its random initialisation (the 1x1 convolutions' rotations) drawn from ``seed``,
    leaving the global RNG as it was: two calls with the same arguments give the same weights, which is what
    makes a fresh run with a given seed reproducible (``train`` itself draws nothing from the global RNG)."""
    from flowmodels.variants import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model"))
        return build_model(variant, tuple(image_shape), num_classes, **hparams)


# --- devices and processes -------------------------------------------------------------------------------------
def distributed_context() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_device(name: str = "auto", rank: int = 0) -> torch.device:
    """"auto": CUDA when present (in a distributed run the GPU of LOCAL_RANK), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
        return torch.device("cuda", local)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available")
    return device


# --- checkpoints -----------------------------------------------------------------------------------------------
def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_cpu(v) for v in obj)
    return obj


def state_digest(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes): equal digests = identical weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _publish_last(step_path: Path, last: Path) -> None:
    """``last.pt`` := the step file, atomically (a hard link when the filesystem allows, else a copy)."""
    tmp = last.with_name(f".{last.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(step_path, tmp)
    except OSError:
        shutil.copyfile(step_path, tmp)
    os.replace(tmp, last)


def checkpoint_path(checkpoint_dir: Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"step-{step:07d}.pt"


def load_checkpoint(path) -> dict:
    """A checkpoint written by ``train`` (tensors, numbers, strings, lists, dicts only: ``weights_only=True``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def model_from_checkpoint(path_or_dict, device: str | torch.device = "cpu") -> FlowModel:
    """Rebuild the model of a checkpoint (``build_model(**config)``) and load its weights, actnorm's
    "initialized" flags included; returned in eval mode on ``device``."""
    from flowmodels.variants import build_model

    state = path_or_dict if isinstance(path_or_dict, Mapping) else load_checkpoint(path_or_dict)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an emoflow training checkpoint (format {state.get('format')!r})")
    config = dict(state["model_config"])
    config["image_shape"] = tuple(config["image_shape"])
    model = build_model(**config)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _prune(checkpoint_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    files = sorted(Path(checkpoint_dir).glob("step-*.pt"))
    for old in files[:-keep]:
        old.unlink(missing_ok=True)


# --- the loop --------------------------------------------------------------------------------------------------
class _Objective(nn.Module):
    """What DDP wraps: the mean bits/dim of a batch with given dequantisation noise (so the forward pass goes
    through DDP's wrapper, as DDP requires, while the noise stays a function of (seed, step))."""

    def __init__(self, model: FlowModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, y: Tensor | None, noise: Tensor) -> Tensor:
        return self.model.bits_per_dim(x, y, noise=noise).mean()


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr)
    return torch.optim.Adamax(params, lr=config.lr)


def _all_initialised(model: nn.Module) -> bool:
    flags = [bool(m.initialized) for m in model.modules() if isinstance(m, ActNorm)]
    return all(flags)


def _broadcast_object(obj: Any, world: int) -> Any:
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _check_resume(state: Mapping[str, Any], config: TrainConfig, model: FlowModel, data: dict) -> None:
    """Refuse a checkpoint of another run: other trajectory settings, another model, other data."""
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an emoflow training checkpoint (format {state.get('format')!r})")
    saved = state["config"]
    changed = {k: (saved.get(k), getattr(config, k)) for k in TRAJECTORY_FIELDS if saved.get(k) != getattr(config, k)}
    problems = [f"train.{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items()]
    saved_model = dict(state["model_config"])
    if saved_model != _jsonable(model.config):
        keys = sorted(k for k in set(saved_model) | set(model.config) if saved_model.get(k) != _jsonable(model.config).get(k))
        problems.append("model: " + ", ".join(f"{k} checkpoint {saved_model.get(k)!r}, now {model.config.get(k)!r}" for k in keys))
    for which in ("train", "val"):
        before, now = (state.get("data") or {}).get(which), data.get(which)
        if before != now:
            describe = lambda d: "none" if d is None else f"{d['name']} ({d['count']} images, sha256 {d['sha256'][:12]})"  # noqa: E731
            problems.append(f"{which} data: checkpoint {describe(before)}, now {describe(now)}")
    if problems:
        raise ValueError(
            "the checkpoint to resume from belongs to a different run (" + "; ".join(problems) + "). "
            "Use another checkpoint directory, delete its last.pt, or pass resume=False (--no-resume) to start over."
        )
    others = [k for k in saved if k not in TRAJECTORY_FIELDS and saved.get(k) != getattr(config, k, None)]
    if others:
        log.info("resuming with changed budget/cadence settings: %s", {k: (saved.get(k), getattr(config, k, None)) for k in others})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _divergence_message(config: TrainConfig, step: int, count: int, loss: float, grad_norm: float, model: FlowModel) -> str:
    coupling = model.config.get("glow_coupling")
    hints = [
        f"a lower learning rate (lr is {config.lr:g})",
        f"a longer warm-up (warmup_steps is {config.warmup_steps})",
    ]
    if config.grad_clip in (None, 0):
        hints.append("gradient clipping (grad_clip: 50)")
    if str(model.config.get("variant", "")).startswith("glow") and coupling != "additive":
        hints.append("additive coupling (model hparams glow_coupling: additive), which is more stable than affine")
    else:
        hints.append("a Glow variant with additive coupling (glow_coupling: additive)")
    if config.bf16:
        hints.append("bf16 off (bf16: false)")
    return (
        f"training diverged: {count} consecutive steps with a non-finite loss or gradient norm, up to step {step} "
        f"(last loss {loss}, gradient norm {grad_norm}); the model was not updated on those steps. Try "
        + ", ".join(hints)
        + ". The last good checkpoint is still in the checkpoint directory."
    )


def train(
    model: FlowModel,
    train_set: ImageSet,
    val_set: ImageSet | None,
    config: TrainConfig,
    checkpoint_dir: Path,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = False,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` in place on ``train_set`` (see the module docstring for the guarantees).

    Works in a plain process and, unchanged, in every process of a ``torchrun`` launch (``torch.distributed``
    already initialised; ``flowmodels.train_main`` does that). ``checkpoint_dir`` receives ``step-XXXXXXX.pt``
    every ``checkpoint_every`` steps and at the end, and ``last.pt`` (the newest); with ``resume`` an existing
    ``last.pt`` of the same run is picked up (a checkpoint of another run, i.e. other trajectory settings,
    model or data, is refused with an error). ``on_progress`` (rank 0 only) receives dicts with an "event" key:
    "log" {"step", "bpd", "lr", "images_per_s", "elapsed", "epoch", "skipped_steps"}, "val" {"step",
    "val_bpd"}, "skipped" {"step", "loss", "grad_norm", "consecutive"}, "checkpoint" {"step", "path"}.
    ``progress_bar``: a tqdm bar on stderr (rank 0). The model is left on the training device.
    """
    from flowmodels.evaluation import dataset_bits_per_dim

    if not isinstance(model, FlowModel):
        raise TypeError(f"train() takes a FlowModel (flowmodels.build_model), got {type(model).__name__}")
    config.validate()
    rank, world = distributed_context()
    device = resolve_device(config.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    # -- inputs -------------------------------------------------------------------------------------------------
    if train_set.image_shape != tuple(model.image_shape):
        raise ValueError(f"model expects images {tuple(model.image_shape)}, {train_set.name} has {train_set.image_shape}")
    if val_set is not None and len(val_set) == 0:
        val_set = None
    if val_set is not None and val_set.image_shape != tuple(model.image_shape):
        raise ValueError(f"model expects images {tuple(model.image_shape)}, {val_set.name} has {val_set.image_shape}")
    if model.conditional:
        for s in (train_set, val_set):
            if s is None:
                continue
            if s.labels is None:
                raise ValueError(f"a class-conditional model needs labels, and {s.name} has none")
            if len(s) and int(s.labels.max()) >= model.num_classes:
                raise ValueError(f"{s.name} has labels up to {int(s.labels.max())}; the model has {model.num_classes} classes")
    global_batch = config.batch_size
    if global_batch % world:
        raise ValueError(f"batch_size {global_batch} (the global batch) must be divisible by the {world} processes")
    local_batch = global_batch // world
    n = len(train_set)
    spe = steps_per_epoch(n, global_batch)
    if spe < 1:
        raise ValueError(f"{train_set.name} has {n} images, fewer than one batch of {global_batch}")
    step_limit = math.inf
    if config.max_steps is not None:
        step_limit = config.max_steps
    if config.max_epochs is not None:
        step_limit = min(step_limit, math.ceil(config.max_epochs * spe))
    image_shape = tuple(model.image_shape)
    labels = train_set.labels if model.conditional else None
    data_prints = {"train": train_set.fingerprint(), "val": None if val_set is None else val_set.fingerprint()}

    checkpoint_dir = Path(checkpoint_dir)
    last_path = checkpoint_dir / "last.pt"
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    model.to(device)
    model.train()
    optimizer = _make_optimizer(config, model.parameters())
    schedule = WarmupSchedule(optimizer, config.lr, config.warmup_steps)

    # -- resume or initialise ------------------------------------------------------------------------------------
    state: dict | None = None
    if resume:
        outcome: Any = None
        if rank == 0 and last_path.exists():
            try:
                loaded = load_checkpoint(last_path)
                _check_resume(loaded, config, model, data_prints)
                outcome = ("ok", loaded)
            except Exception as exc:
                if world == 1:
                    raise
                outcome = ("error", f"{type(exc).__name__}: {exc}")  # every rank must learn of it, or they wait
        if world > 1:
            outcome = _broadcast_object(outcome, world)
            if outcome is not None and outcome[0] == "error":
                raise ValueError(f"cannot resume from {last_path}: {outcome[1]}")
        if outcome is not None:
            state = outcome[1]

    history: list[dict] = []
    val_history: list[dict] = []
    skipped_at: list[int] = []
    skipped = consecutive = 0
    elapsed_before = 0.0
    window = {"sum": 0.0, "count": 0, "images": 0, "compute": 0.0}
    start_step = 0
    resumed_from: int | None = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        start_step = resumed_from = int(state["step"])
        history, val_history = list(state["history"]), list(state["val_history"])
        skipped, consecutive = int(state["skipped_steps"]), int(state["consecutive_bad"])
        skipped_at = list(state["skipped_at"])
        elapsed_before = float(state["elapsed"])
        window.update({"sum": float(state["window"]["sum"]), "count": int(state["window"]["count"])})
        initialization = "checkpoint"
        log.info("resuming %s from step %d (%s)", train_set.name, start_step, last_path)
    if state is None:
        if _all_initialised(model):
            initialization = "given"
        else:
            initialization = "data"
            if rank == 0:  # the others receive it through DDP's broadcast below
                idx = init_indices(config.seed, n, config.init_batch)
                x0 = train_set.images[idx].to(device)
                y0 = labels[idx].to(device) if labels is not None else None
                with torch.random.fork_rng(devices=_rng_devices(device)):
                    torch.manual_seed(derive_seed(config.seed, "init-noise"))
                    model.initialize(x0, y0)

    objective: nn.Module = _Objective(model)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective,
            device_ids=[device.index] if device.type == "cuda" else None,
            # torch 2.14: the constructor always broadcasts rank 0's buffers with forward_sync_buffers set (actnorm's
            # "initialized" flags, the 1x1 convolutions' permutations); they never change afterwards, so no
            # re-broadcast before every forward. ``_verify_replicas`` checks the outcome.
            forward_sync_buffers=False,
        )
        _verify_replicas(model, rank, world, data_prints["train"]["sha256"])

    # -- helpers -------------------------------------------------------------------------------------------------
    session_start = time.perf_counter()
    session_images = 0
    session_compute = 0.0

    def elapsed() -> float:
        return elapsed_before + (time.perf_counter() - session_start)

    def emit(event: dict) -> None:
        if rank == 0 and on_progress is not None:
            on_progress(event)

    def validate(step: int) -> float:
        model.eval()
        value = dataset_bits_per_dim(
            model, val_set, batch_size=max(local_batch, 64), seed=derive_seed(config.seed, "val"), device=device,
            rank=rank, world=world,
        )["standard"]
        model.train()
        val_history.append({"step": step, "val_bpd": value})
        emit({"event": "val", "step": step, "val_bpd": value})
        return value

    def save(step: int) -> None:
        if rank != 0:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "epochs": step / spe,
            "model_config": _jsonable(model.config),
            "model": _to_cpu(model.state_dict()),
            "optimizer": _to_cpu(optimizer.state_dict()),
            "scheduler": schedule.state_dict(),
            "config": config.as_dict(),
            "history": history,
            "val_history": val_history,
            "skipped_steps": skipped,
            "consecutive_bad": consecutive,
            "skipped_at": skipped_at,
            "elapsed": elapsed(),
            "window": {"sum": window["sum"], "count": window["count"]},
            "data": data_prints,
            "world_size": world,
            "device": str(device),
            "torch_version": str(torch.__version__),
            "saved_at": time.time(),
        }
        path = checkpoint_path(checkpoint_dir, step)
        _atomic_save(payload, path)
        _publish_last(path, last_path)
        _prune(checkpoint_dir, config.keep_checkpoints)
        emit({"event": "checkpoint", "step": step, "path": str(path)})

    def log_window(step: int, lr: float) -> None:
        bpd = window["sum"] / window["count"] if window["count"] else None
        ips = window["images"] / window["compute"] if window["compute"] > 0 else 0.0
        entry = {
            "step": step,
            "bpd": bpd,
            "lr": lr,
            "images_per_s": ips,
            "elapsed": elapsed(),
            "epoch": step / spe,
            "skipped_steps": skipped,
        }
        history.append(entry)
        window.update({"sum": 0.0, "count": 0, "images": 0, "compute": 0.0})
        emit({"event": "log", **entry})
        if bar is not None:
            bar.set_postfix(bpd=f"{bpd:.4f}" if bpd is not None else "-", img_s=f"{ips:.0f}")

    bar = None
    if progress_bar and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=None if math.isinf(step_limit) else int(step_limit),
            initial=start_step,
            unit="step",
            desc=f"train {model.config.get('variant', 'flow')}",
            dynamic_ncols=True,
        )

    # -- steps -------------------------------------------------------------------------------------------------
    step = start_step
    stopped_by = None
    last_saved = start_step if state is not None else None
    last_logged = history[-1]["step"] if history else None
    lr = warmup_lr(step, config.lr, config.warmup_steps)
    cached_epoch, perm = -1, None
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if config.bf16 else contextlib.nullcontext()
    max_norm = config.grad_clip if config.grad_clip else math.inf
    params = [p for p in model.parameters() if p.requires_grad]
    if config.max_seconds is not None and elapsed_before >= config.max_seconds:
        stopped_by = "max_seconds"
    try:
        while stopped_by is None and step < step_limit:
            t0 = time.perf_counter()
            epoch, k = divmod(step, spe)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, epoch_permutation(config.seed, epoch, n)
            idx = perm[k * global_batch : (k + 1) * global_batch][rank * local_batch : (rank + 1) * local_batch]
            x = train_set.images[idx].to(device, non_blocking=True)
            y = labels[idx].to(device, non_blocking=True) if labels is not None else None
            noise = step_noise(config.seed, step, (global_batch, *image_shape))[rank * local_batch : (rank + 1) * local_batch]
            lr = schedule.apply(step)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = objective(x, y, noise.to(device, non_blocking=True))
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            time_up = rank == 0 and config.max_seconds is not None and elapsed() >= config.max_seconds
            loss_value = loss.detach().float()
            bad_local = (~torch.isfinite(loss_value)) | (~torch.isfinite(grad_norm.float()))
            stats = torch.stack([loss_value, bad_local.float(), torch.tensor(float(time_up), device=loss_value.device)])
            if world > 1:
                torch.distributed.all_reduce(stats)
            loss_sum, bad_count, time_flags = stats.tolist()
            mean_loss = loss_sum / world
            if bad_count > 0:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                consecutive += 1
                skipped_at.append(step + 1)
                gn = float(grad_norm)
                log.warning("step %d: non-finite loss %s or gradient norm %s: update skipped (%d in a row)", step + 1, mean_loss, gn, consecutive)
                emit({"event": "skipped", "step": step + 1, "loss": str(mean_loss), "grad_norm": str(gn), "consecutive": consecutive})
                if consecutive >= config.max_bad_steps:
                    raise TrainingDiverged(_divergence_message(config, step + 1, consecutive, mean_loss, gn, model))
            else:
                optimizer.step()
                consecutive = 0
                window["sum"] += mean_loss
                window["count"] += 1
            step += 1
            dt = time.perf_counter() - t0
            window["images"] += global_batch
            window["compute"] += dt
            session_images += global_batch
            session_compute += dt
            if bar is not None:
                bar.update(1)
            at_end = step >= step_limit or time_flags > 0
            if step % config.log_every == 0 or at_end:
                log_window(step, lr)
                last_logged = step
            if val_set is not None and config.val_every and step % config.val_every == 0:
                validate(step)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save(step)
                last_saved = step
            if time_flags > 0:
                stopped_by = "max_seconds"
    finally:
        if bar is not None:
            bar.close()
    if stopped_by is None:
        stopped_by = "max_steps" if config.max_steps is not None and step >= config.max_steps else "max_epochs"

    # -- the end: a final validation and checkpoint ------------------------------------------------------------
    if window["count"] and last_logged != step:
        log_window(step, lr)
    val_bpd = None
    if val_set is not None:
        if val_history and val_history[-1]["step"] == step:
            val_bpd = val_history[-1]["val_bpd"]
        else:
            val_bpd = validate(step)
    if last_saved != step or not last_path.exists():
        save(step)
    if world > 1:
        torch.distributed.barrier()
    train_bpd = next((h["bpd"] for h in reversed(history) if h.get("bpd") is not None), None)
    return TrainResult(
        steps=step,
        epochs=step / spe,
        seconds=elapsed(),
        images_per_s=session_images / session_compute if session_compute > 0 else 0.0,
        train_bpd=train_bpd,
        val_bpd=val_bpd,
        history=history,
        val_history=val_history,
        skipped_steps=skipped,
        stopped_by=stopped_by,
        checkpoint=str(last_path),
        resumed_from_step=resumed_from,
        device=str(device),
        world_size=world,
        skipped_at=skipped_at,
        steps_per_epoch=spe,
        initialization=initialization,
    )


def _rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG ``fork_rng`` must save and restore for work on ``device``."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _verify_replicas(model: FlowModel, rank: int, world: int, data_sha: str = "") -> None:
    """After DDP's constructor: every rank must hold rank 0's parameters and buffers, actnorm's "initialized"
    flags included (rank 0 alone ran the initialisation). A rank that still says "not initialised" would
    re-initialise from its own slice of the first batch: the scrambled initialisation public Glow ports hit."""
    ok = _all_initialised(model)
    digests: list[Any] = [None] * world
    torch.distributed.all_gather_object(digests, (ok, state_digest(model), data_sha))
    not_initialised = [r for r, (flag, _, _) in enumerate(digests) if not flag]
    if not_initialised:
        raise RuntimeError(f"actnorm not initialised on rank(s) {not_initialised} after DDP's broadcast")
    differ = [r for r, (_, d, _) in enumerate(digests) if d != digests[0][1]]
    if differ:
        raise RuntimeError(f"rank(s) {differ} hold other weights than rank 0 after DDP's broadcast")
    other_data = [r for r, (_, _, d) in enumerate(digests) if d != digests[0][2]]
    if other_data:
        raise RuntimeError(f"rank(s) {other_data} loaded other training images than rank 0 (sha256 differs)")
