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

    def stage_progress(self, what: str):
        """A ``progress(stage, done, total)`` callback for evaluations: a log line per stage, and a tqdm bar on
        the terminal when ``progress_bars``. Call ``.close()`` on the result when done."""
        return StageProgress(self, what)


class StageProgress:
    def __init__(self, ctx: RunContext, what: str):
        self.ctx, self.what, self.bar = ctx, what, None
        self.say = ctx.throttled(what)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.ctx.progress_bars:
            if self.bar is None:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=self.what, unit="stage", dynamic_ncols=True)
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(stage, refresh=True)
        self.say(f"{stage} ({done}/{total})", force=done == total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
