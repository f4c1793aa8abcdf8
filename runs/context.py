"""What every run function receives: the settings, emoflow's home, MLflow tracking, and how to report progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.params import Params
from runs.tracking import Tracking

log = logging.getLogger("runs")


@dataclass
class RunContext:
    """``settings``: the loaded params (passed down, never re-read); ``home``: where emoflow writes;
    ``tracking``: MLflow; ``progress_bars``: tqdm bars on the terminal (the CLI); ``tags``: extra MLflow run
    tags (the Dagster run and partition when Dagster calls); ``log_every_s``: how often progress lines go to the
    log (the Dagster event log shows them)."""

    settings: Params
    home: Path
    tracking: Tracking
    progress_bars: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    log_every_s: float = 5.0
    logger: logging.Logger = log

    @classmethod
    def create(cls, settings: Params, home: Path, tracking_uri: str | None = None, **kwargs) -> RunContext:
        home = Path(home).resolve()
        return cls(settings, home, Tracking.from_settings(settings.tracking, home, tracking_uri), **kwargs)

    def throttled(self, what: str) -> Callable[[str], None]:
        """A logger of progress lines for ``what`` that speaks at most every ``log_every_s`` seconds (and
        always when told ``force=True``)."""
        last = [0.0]

        def say(message: str, force: bool = False) -> None:
            now = time.monotonic()
            if force or now - last[0] >= self.log_every_s:
                last[0] = now
                self.logger.info("%s: %s", what, message)

        return say

    def stage_progress(self, what: str) -> StageProgress:
        """A ``progress(stage, done, total)`` callback for jobs of named stages (evaluations, scoreboards): see
        ``StageProgress``. Call ``.close()`` on the result when done."""
        return StageProgress(self, what)


class StageProgress:
    """``progress(stage, done, total)``: the job ``what`` is in stage ``stage`` (any string: an evaluation stage,
    a model being scored, a fold) and has done ``done`` of that stage's ``total`` units (batches, samples,
    models). Callers that count whole stages instead (``progress("t-SNE", 3, 5)``) read as well.

    The terminal (``progress_bars``) gets one tqdm bar, restarted when the stage changes, so its rate and ETA
    are the stage's. The log (Dagster's event log) gets a line naming the stage and the fraction done when a
    stage starts, when it ends (done == total) and in between at most every ``log_every_s`` seconds."""

    def __init__(self, ctx: RunContext, what: str):
        self.ctx, self.what, self.bar = ctx, what, None
        self.stage: str | None = None
        self.stage_started = 0.0
        self.last_line = -float("inf")

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        starts = stage != self.stage
        if starts:
            self.stage, self.stage_started = stage, now
        if self.ctx.progress_bars:
            self._draw(stage, done, total, starts)
        ends = done >= total
        if starts or ends or now - self.last_line >= self.ctx.log_every_s:
            self.last_line = now
            self.ctx.logger.info("%s: %s", self.what, self.line(stage, done, total, now - self.stage_started))

    @staticmethod
    def line(stage: str, done: int, total: int, elapsed: float) -> str:
        """A log line's text, e.g. 'bits/dim 12/30 (40%), 35 s, about 52 s left'."""
        text = f"{stage} {done}/{total}"
        if total > 0:
            text += f" ({100.0 * done / total:.0f}%)"
        text += f", {elapsed:.0f} s"
        if 0 < done < total:
            text += f", about {elapsed * (total - done) / done:.0f} s left"
        return text

    def _draw(self, stage: str, done: int, total: int, starts: bool) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"{self.what}: {stage}", dynamic_ncols=True)
        elif starts:
            self.bar.reset(total=total)
            self.bar.set_description_str(f"{self.what}: {stage}", refresh=False)
        self.bar.total = total
        if done >= self.bar.n:  # update() keeps tqdm's rate and ETA right
            self.bar.update(done - self.bar.n)
        else:
            self.bar.n = done
        if done >= total:
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
