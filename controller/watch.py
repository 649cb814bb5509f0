"""Docker's event stream wakes the reconcile sweep, so a dead replica is replaced within about a second.

The stream only wakes the loop; the periodic sweep still heals whatever an event missed. The stream has
no timeout, so a broken one is reopened from the last event's time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from orchestry.runtime.types import EngineEvent, Runtime

log = logging.getLogger("orchestry.watch")
WAKING_ACTIONS = frozenset({"die", "destroy", "oom"})  # `kill` comes before the container is down


class EventWatcher:
    def __init__(self, runtime: Runtime, cluster: str, on_change: Callable[[EngineEvent], None]) -> None:
        self.runtime = runtime
        self.cluster = cluster
        self.on_change = on_change
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="orchestry-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None and hasattr(stream, "close"):
            try:
                stream.close()
            except Exception:  # closing a broken stream may raise anything; it is going away anyway
                log.debug("closing the event stream failed", exc_info=True)

    def _loop(self) -> None:
        since: datetime | None = None
        broken = False
        while not self._stop.is_set():
            try:
                self._stream = self.runtime.events(self.cluster, since)
                broken = False
                for event in self._stream:
                    since = event.time
                    if event.action in WAKING_ACTIONS:
                        self.on_change(event)
                    if self._stop.is_set():
                        break
            except Exception as exc:
                if not self._stop.is_set():
                    # once per outage (the component probe reports Docker's); each retry only at debug level
                    level = logging.DEBUG if broken else logging.WARNING
                    log.log(level, "docker event stream broke; reopening", extra={"error": str(exc)})
                    broken = True
            self._stop.wait(1.0)
