"""This node's components (the database, Docker, its nginx): their state, and one log line per change.

Every part that talks to a component reports what it saw (`report`); workflows/components.py decides what
is worth logging: a warning when one goes down, again at most once a minute while it stays down, an info when
it recovers. A probe thread on every node looks at the database (a read and a rolled-back write) and Docker
every few seconds, so an idle node notices too; nginx is reported by whatever drives it (the leader's render
job, every node's route mirror). `/health`, `/metrics` and `orchestry status` show the snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.health import probe_database
from orchestry.runtime.types import Runtime, RuntimeFailure
from orchestry.workflows.components import ComponentState, observe

log = logging.getLogger("orchestry.components")
PROBE_SECONDS = 5.0
# What the outage's log line suggests (issue 17: apps were unreachable "with no hint of what to install").
HINTS = {
    "nginx": "`orchestry doctor` names what is missing and the command that installs it; "
    "ORCHESTRY_NGINX=off runs without routing",
    "docker": "`orchestry doctor` checks the engine; is dockerd running (systemctl start docker)?",
}


class ComponentMonitor:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_down: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_down = on_down  # called once per outage, when it begins (e.g. to write the audit trail)
        self._lock = threading.Lock()
        self._states: dict[str, ComponentState] = {}

    def report(self, name: str, up: bool, error: str | None = None) -> str | None:
        """One observation; logs what the state machine says. Returns it ("down", "still down", "recovered")."""
        with self._lock:
            step = observe(self._states.get(name, ComponentState()), up, self.clock(), error)
            self._states[name] = step.state
        if step.say == "recovered":
            log.info(f"{name} recovered", extra={"component": name, "down_seconds": round(step.down_for or 0, 1)})
        elif step.say == "down":
            log.warning(f"{name} is down", extra={"component": name, "error": error, "hint": HINTS.get(name)})
            if self.on_down is not None:
                self.on_down(name, error)
        elif step.say == "still down":
            log.warning(
                f"{name} is still down",
                extra={
                    "component": name,
                    "down_seconds": round(step.down_for or 0, 1),
                    "error": error,
                    "hint": HINTS.get(name),
                },
            )
        return step.say

    def snapshot(self) -> dict[str, ComponentState]:
        with self._lock:
            return dict(self._states)


class ComponentProbe:
    """Looks at the database and Docker every `period` seconds, on every node (leader or not)."""

    def __init__(
        self,
        monitor: ComponentMonitor,
        sessions: sessionmaker[Session],
        runtime: Runtime,
        cluster: str,
        node: str = "",
        period: float = PROBE_SECONDS,
    ) -> None:
        self.monitor = monitor
        self.sessions = sessions
        self.runtime = runtime
        self.cluster = cluster
        self.node = node
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestry-components", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Its probes only read (and roll back): a shutdown does not wait long for one to finish."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=wait)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never let the probe die: the node would stop noticing outages
                log.exception("component probe failed")
            self._stop.wait(self.period)

    def run_once(self) -> None:
        db = probe_database(self.sessions, self.node)
        self.monitor.report("database", db.ok, db.error)
        try:
            self.runtime.list_replicas(self.cluster)
            self.monitor.report("docker", True)
        except RuntimeFailure as exc:
            self.monitor.report("docker", False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
