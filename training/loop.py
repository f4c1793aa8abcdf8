"""``run_training``: the loop every model family trains through (see the package docstring).

A ``Trainer`` owns its models, optimizers and data; the loop owns budgets, cadences, the non-finite guard,
checkpoint files and resume. Determinism: the trainer draws every random number from ``training.seeds`` streams
of (seed, step), so ``train_step(s)`` after a resume computes what it computes in an uninterrupted run; the loop
saves the trainer's ``state_dict`` and its own ``TrainState`` together, atomically.

Distributed runs (torchrun): every rank runs the loop; trainers agree on skipping with
``training.devices.any_rank``, the loop agrees on stopping at a time budget the same way, and rank 0 alone
writes checkpoints and emits progress.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from training.checkpoints import atomic_save, checkpoint_path, jsonable, load_checkpoint, prune, publish_last, to_cpu
from training.devices import any_rank, broadcast_object, distributed_context
from training.state import TrainState

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emoflow-checkpoint/2"


@dataclass(frozen=True)
class LoopConfig:
    """Budgets (training stops at whichever of max_steps / max_epochs / max_seconds comes first; at least one
    set) and cadences in steps (``checkpoint_every``/``val_every`` 0: only at the end). ``max_bad_steps``:
    consecutive skipped (non-finite) steps before ``TrainingDiverged``. ``keep_checkpoints``: step files to
    keep (None: all; ``last.pt`` always stays). No defaults here: they live in the settings (params.yaml)."""

    max_steps: int | None
    max_epochs: float | None
    max_seconds: float | None
    checkpoint_every: int
    val_every: int
    log_every: int
    max_bad_steps: int
    keep_checkpoints: int | None = None

    def __post_init__(self) -> None:
        if self.max_steps is None and self.max_epochs is None and self.max_seconds is None:
            raise ValueError("set at least one budget: max_steps, max_epochs or max_seconds")
        if self.log_every < 1 or self.max_bad_steps < 1:
            raise ValueError("log_every and max_bad_steps must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> LoopConfig:
        """From any settings object with these attribute names (the families' ``train`` sections)."""
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if hasattr(settings, f.name)})


@dataclass
class StepReport:
    """What one ``train_step`` did. ``losses``: averaged over each log window's finite steps; ``gauges``:
    values reported as they stand (learning rate, a loss weight); ``images``: images it consumed (for
    images/s); ``skipped``: a non-finite loss or gradient was found and the trainer did not update (it must
    agree across ranks: ``training.devices.any_rank``); ``detail``: what was non-finite."""

    losses: dict[str, float]
    images: int
    gauges: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    detail: str = ""


class Trainer(Protocol):
    """What ``run_training`` drives. ``kind`` names the family in checkpoints ("flow", "judge", ...)."""

    kind: str
    steps_per_epoch: int
    device: torch.device

    def initialize(self) -> str:
        """Called on a fresh start (never on resume): data-dependent initialisation. Returns how the model was
        initialised ("data", "given", "random"), recorded in the result."""

    def train_step(self, step: int) -> StepReport:
        """One optimisation step, a pure function of (seed, step) and the current state."""

    def validate(self, step: int) -> dict[str, float] | None:
        """Validation metrics (names prefixed "val_"), or None when there is no validation set."""

    def state_dict(self) -> dict[str, Any]:
        """Every model, optimizer and schedule state: what a checkpoint needs beyond the loop's own."""

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def resume_key(self) -> dict[str, Any]:
        """What must be equal to resume a checkpoint: trajectory settings, model config, data fingerprints."""

    def divergence_advice(self) -> str:
        """What to try when steps keep failing (appended to ``TrainingDiverged``)."""

    # Optional: ``stop_reason(self) -> str | None``, asked after every validation; a string (e.g. "early_stop")
    # ends the run there (with its final checkpoint) and becomes the result's ``stopped_by``.


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    """What a run did; ``as_dict()`` is JSON-serialisable.

    ``seconds``: wall time of the whole run (resumed segments added up); ``images_per_s``: this session's
    throughput (images per second of step time; validation and checkpoint writing excluded); ``final``: the
    newest finite window mean of every loss; ``val``: the last validation metrics; ``history``: one entry per
    log step {"step", <losses> (None when the window had no finite step), <gauges>, "images_per_s", "elapsed",
    "epoch", "skipped_steps"}.
    """

    kind: str
    steps: int
    epochs: float
    seconds: float
    images_per_s: float
    final: dict[str, float | None]
    val: dict[str, float]
    history: list[dict]
    val_history: list[dict]
    skipped_steps: int
    skipped_at: list[int]
    stopped_by: str
    checkpoint: str
    resumed_from_step: int | None
    device: str
    world_size: int
    steps_per_epoch: int
    initialization: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _describe_differences(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    problems = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            problems += _describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            problems.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return problems


def _check_resume(checkpoint: Mapping[str, Any], trainer: Trainer) -> None:
    """Refuse a checkpoint of another run: another family, other trajectory settings, model or data."""
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an emoflow training checkpoint (format {checkpoint.get('format')!r})")
    if checkpoint.get("kind") != trainer.kind:
        raise ValueError(f"the checkpoint holds a {checkpoint.get('kind')!r} run, not a {trainer.kind!r} one")
    problems = _describe_differences(checkpoint.get("resume_key") or {}, jsonable(trainer.resume_key()))
    if problems:
        raise ValueError(
            "the checkpoint to resume from belongs to a different run (" + "; ".join(problems) + "). "
            "Use another checkpoint directory, delete its last.pt, or start over without resuming (--no-resume)."
        )


def _load_for_resume(last_path: Path, trainer: Trainer, rank: int, world: int) -> dict | None:
    outcome: Any = None
    if rank == 0 and last_path.exists():
        try:
            loaded = load_checkpoint(last_path)
            _check_resume(loaded, trainer)
            outcome = ("ok", loaded)
        except Exception as exc:
            if world == 1:
                raise
            outcome = ("error", f"{type(exc).__name__}: {exc}")  # every rank must learn of it, or they wait
    if world > 1:
        outcome = broadcast_object(outcome)
        if outcome is not None and outcome[0] == "error":
            raise ValueError(f"cannot resume from {last_path}: {outcome[1]}")
    return None if outcome is None else outcome[1]


def run_training(
    trainer: Trainer,
    config: LoopConfig,
    checkpoint_dir: Path,
    on_progress: Callable[[dict], None] | None = None,
    progress_bar: bool = False,
    resume: bool = True,
    description: str = "train",
) -> TrainResult:
    """Train until the budget is spent; checkpoints in ``checkpoint_dir`` (``step-XXXXXXX.pt`` at every
    ``checkpoint_every`` steps and at the end, ``last.pt`` the newest). With ``resume`` an existing ``last.pt``
    of the same run is continued (one of another run is refused). ``on_progress`` (rank 0) receives dicts with
    an "event" key: "log" (a history entry), "val" {"step", <metrics>}, "skipped" {"step", "detail",
    "consecutive"}, "checkpoint" {"step", "path"}. ``progress_bar``: tqdm on stderr (rank 0)."""
    rank, world = distributed_context()
    spe = int(trainer.steps_per_epoch)
    if spe < 1:
        raise ValueError("the training set cannot fill one batch")
    step_limit = math.inf
    if config.max_steps is not None:
        step_limit = config.max_steps
    if config.max_epochs is not None:
        step_limit = min(step_limit, math.ceil(config.max_epochs * spe))

    checkpoint_dir = Path(checkpoint_dir)
    last_path = checkpoint_dir / "last.pt"
    if rank == 0:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    loaded = _load_for_resume(last_path, trainer, rank, world) if resume else None
    if loaded is not None:
        trainer.load_state_dict(loaded["trainer"])
        state = TrainState.from_dict(loaded["loop"])
        resumed_from: int | None = state.step
        initialization = "checkpoint"
        log.info("%s: resuming from step %d (%s)", description, state.step, last_path)
    else:
        state = TrainState()
        resumed_from = None
        initialization = trainer.initialize()

    log.info(
        "%s: from step %d (%s) on %s, budget %s steps",
        description,
        state.step,
        initialization,
        trainer.device,
        "unbounded" if math.isinf(step_limit) else int(step_limit),
    )
    session_start = time.perf_counter()
    elapsed_before = state.elapsed
    session_images, session_compute = 0, 0.0

    def elapsed() -> float:
        return elapsed_before + (time.perf_counter() - session_start)

    def emit(event: dict) -> None:
        if rank == 0 and on_progress is not None:
            on_progress(event)

    def validate() -> None:
        metrics = trainer.validate(state.step)
        if metrics is None:
            return
        entry = {"step": state.step, **{k: float(v) for k, v in metrics.items()}}
        state.val_history.append(entry)
        emit({"event": "val", **entry})

    def save() -> None:
        state.elapsed = elapsed()
        if rank != 0:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "kind": trainer.kind,
            "step": state.step,
            "epochs": state.step / spe,
            "trainer": to_cpu(trainer.state_dict()),
            "loop": state.to_dict(),
            "resume_key": jsonable(trainer.resume_key()),
            "loop_config": dataclasses.asdict(config),
            "world_size": world,
            "device": str(trainer.device),
            "torch_version": str(torch.__version__),
            "saved_at": time.time(),
        }
        path = checkpoint_path(checkpoint_dir, state.step)
        atomic_save(payload, path)
        publish_last(path, last_path)
        prune(checkpoint_dir, config.keep_checkpoints)
        emit({"event": "checkpoint", "step": state.step, "path": str(path)})

    def log_window() -> None:
        window = state.window
        entry = {
            "step": state.step,
            **window.means(state.loss_names),
            **state.gauges,
            "images_per_s": window.images_per_s(),
            "elapsed": elapsed(),
            "epoch": state.step / spe,
            "skipped_steps": state.skipped_steps,
        }
        state.history.append(entry)
        window.reset()
        emit({"event": "log", **entry})
        if bar is not None:
            shown = {k: f"{entry[k]:.4f}" for k in state.loss_names[:2] if entry.get(k) is not None}
            bar.set_postfix(**shown, img_s=f"{entry['images_per_s']:.0f}")

    bar = None
    if progress_bar and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=None if math.isinf(step_limit) else int(step_limit),
            initial=state.step,
            unit="step",
            desc=description,
            dynamic_ncols=True,
        )

    stopped_by = None
    last_saved = state.step if loaded is not None else None
    last_logged = state.history[-1]["step"] if state.history else None
    if config.max_seconds is not None and elapsed_before >= config.max_seconds:
        stopped_by = "max_seconds"
    try:
        while stopped_by is None and state.step < step_limit:
            t0 = time.perf_counter()
            report = trainer.train_step(state.step)
            state.step += 1
            for name in report.losses:
                if name not in state.loss_names:
                    state.loss_names.append(name)
            state.gauges.update({k: float(v) for k, v in report.gauges.items()})
            if report.skipped:
                state.skipped_steps += 1
                state.consecutive_bad += 1
                state.skipped_at.append(state.step)
                log.warning(
                    "%s step %d: %s: update skipped (%d in a row)",
                    description,
                    state.step,
                    report.detail,
                    state.consecutive_bad,
                )
                emit(
                    {
                        "event": "skipped",
                        "step": state.step,
                        "detail": report.detail,
                        "consecutive": state.consecutive_bad,
                    }
                )
                if state.consecutive_bad >= config.max_bad_steps:
                    raise TrainingDiverged(
                        f"training diverged: {state.consecutive_bad} consecutive steps with a non-finite loss or "
                        f"gradient, up to step {state.step} ({report.detail}); the model was not updated on those "
                        f"steps. Try {trainer.divergence_advice()}. The last good checkpoint is still in {checkpoint_dir}."
                    )
            else:
                state.consecutive_bad = 0
                state.window.add(report.losses)
            dt = time.perf_counter() - t0
            state.window.images += report.images
            state.window.compute += dt
            session_images += report.images
            session_compute += dt
            if bar is not None:
                bar.update(1)
            time_up = any_rank(
                rank == 0 and config.max_seconds is not None and elapsed() >= config.max_seconds, trainer.device
            )
            at_end = state.step >= step_limit or time_up
            if state.step % config.log_every == 0 or at_end:
                log_window()
                last_logged = state.step
            if config.val_every and state.step % config.val_every == 0:
                validate()
                reason = getattr(trainer, "stop_reason", lambda: None)()
                if reason:
                    stopped_by = reason
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                save()
                last_saved = state.step
            if time_up:
                stopped_by = "max_seconds"
    finally:
        if bar is not None:
            bar.close()
    if stopped_by is None:
        stopped_by = "max_steps" if config.max_steps is not None and state.step >= config.max_steps else "max_epochs"

    if state.window.count and last_logged != state.step:
        log_window()
    if not (state.val_history and state.val_history[-1]["step"] == state.step):
        validate()
    if last_saved != state.step or not last_path.exists():
        save()
    if world > 1:
        torch.distributed.barrier()
    log.info("%s: stopped at step %d (%s) after %.1f s", description, state.step, stopped_by, elapsed())
    return TrainResult(
        kind=trainer.kind,
        steps=state.step,
        epochs=state.step / spe,
        seconds=elapsed(),
        images_per_s=session_images / session_compute if session_compute > 0 else 0.0,
        final={name: state.last_logged(name) for name in state.loss_names},
        val={k: v for k, v in (state.val_history[-1] if state.val_history else {}).items() if k != "step"},
        history=state.history,
        val_history=state.val_history,
        skipped_steps=state.skipped_steps,
        skipped_at=state.skipped_at,
        stopped_by=stopped_by,
        checkpoint=str(last_path),
        resumed_from_step=resumed_from,
        device=str(trainer.device),
        world_size=world,
        steps_per_epoch=spe,
        initialization=initialization,
    )
