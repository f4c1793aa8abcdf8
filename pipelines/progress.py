"""Terminal progress for long data work: one tqdm bar per source, fed by the pipeline's progress callback."""

from __future__ import annotations

import sys


class SourceProgressBars:
    """Rows read from each source (each one through reading, face detection and alignment), with the rows kept
    and quarantined so far. Sources stream, so a bar counts up without a total."""

    def __init__(self, file=None):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._file = file or sys.stderr
        self._bars = {}

    def __call__(self, event: dict) -> None:
        source = event["source"]
        bar = self._bars.get(source)
        if bar is None:
            bar = self._bars[source] = self._tqdm(
                desc=f"{source:8s} read+faces", unit="img", file=self._file, dynamic_ncols=True
            )
        bar.n = event["rows_in"]
        bar.set_postfix(kept=event["rows_out"], quarantined=event["quarantined"], refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
