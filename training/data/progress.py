"""Progress lines for the long stages of data preparation.

Ray Data's own progress bars are off (a bar per dataset and operator drowns the run's output),
so a read of millions of rows would otherwise be silent for minutes. A stage that runs longer
than `every_s` says so every `every_s` seconds, with the rows done, the rate and an ETA when it
can count them, and says when it ends; a short stage prints nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from training.runtime.report import eta

log = logging.getLogger(__name__)


class StageProgress:
    """`with StageProgress("reading s3://bucket/tx/") as p: ... p.advance(rows) ...`"""

    def __init__(self, stage: str, total_rows: Optional[int] = None, every_s: float = 15.0):
        self.stage, self.total, self.every_s = stage, total_rows, every_s
        self.done = 0
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"progress-{stage}", daemon=True)

    def __enter__(self) -> "StageProgress":
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def advance(self, rows: int) -> None:
        self.done += rows

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.lines and exc[0] is None:
            log.info("data: %s done in %.1fs", self.stage, time.perf_counter() - self.t0)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        if not self.done:
            return f"data: {self.stage} ({elapsed:.0f}s so far)"
        rate = self.done / max(elapsed, 1e-9)
        if not self.total:
            return f"data: {self.stage}: {self.done:,} rows ({rate:,.0f} rows/s, {elapsed:.0f}s so far)"
        left = eta((self.total - self.done) / max(rate, 1e-9))
        return (f"data: {self.stage}: {self.done:,}/{self.total:,} rows ({100 * self.done / self.total:.0f}%, "
                f"{rate:,.0f} rows/s, {left})")

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            log.info("%s", self.line())
            self.lines += 1
