"""A pull's progress as job steps, while it runs.

The engine reports a pull's progress many times a second, from the pull's own thread. Each report that moved
is kept; at most one becomes a step per `PROGRESS_SECONDS` (a step is a write of the job's row, and the CLI's
`--wait` and the dashboard print each one), so a 2-minute pull of a large image shows about 120 lines of
`pulling IMAGE (progress 3/7 layers, 41.0 MB of 96.2 MB)` rather than nothing between its start and its end.
Once the pull has returned (or timed out, leaving the engine's stream running in its thread), reports are
dropped: the job's next steps are about something else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from orchestry.runtime.types import PullUpdate
from orchestry.workflows.registry import progress_due, pull_progress

log = logging.getLogger("orchestry.jobs")


class ProgressSteps:
    """The `on_progress` of one pull, recording `pulling IMAGE` steps through `step` (the job's)."""

    def __init__(
        self, image: str, step: Callable[..., None], clock: Callable[[], float] = time.monotonic, **detail: Any
    ) -> None:
        self.image = image
        self._step = step
        self._clock = clock
        self._detail = detail
        self._lock = threading.Lock()
        self._last_at = clock()  # the `pulling` step that opened the pull was written now
        self._last: PullUpdate | None = None
        self._open = True
        self.written = 0

    def began(self) -> None:
        """The pull starts: its opening step (status running), from which progress is timed."""
        self._step(f"pulling {self.image}", status="running", **self._detail)
        with self._lock:
            self._last_at = self._clock()

    def __call__(self, update: PullUpdate) -> None:
        with self._lock:
            now = self._clock()
            if not self._open or not progress_due(self._last_at, now, update != self._last):
                return
            self._last_at, self._last = now, update
            # Written under the lock: two reports racing would otherwise both pass the check. A write the
            # database refused (busy) skips this report: progress is worth no failed pull. NotLeader passes.
            try:
                self._write(update)
            except SQLAlchemyError as exc:
                log.debug("pull progress not recorded", extra={"image": self.image, "error": str(exc).splitlines()[0]})

    def _write(self, update: PullUpdate) -> None:
        self._step(
            f"pulling {self.image}",
            status="running",
            progress=pull_progress(update.layers, update.layers_done, update.bytes_done, update.bytes_total),
            layers=update.layers,
            layers_done=update.layers_done,
            bytes_done=update.bytes_done,
            bytes_total=update.bytes_total,
        )
        self.written += 1

    def close(self) -> None:
        """The pull returned: later reports (an abandoned pull's thread) record nothing."""
        with self._lock:
            self._open = False
