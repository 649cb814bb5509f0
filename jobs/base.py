"""What a job handler gets and what it may raise.

Handlers take a `JobContext` (the job's id and arguments, sessions, the runtime, the fence) and return a
small result dict. They signal outcomes by exception, as kopf does:
- `TemporaryError`: retry later with capped backoff, or after its own `seconds` (counts an attempt);
- `PermanentError`: fail now, with a message a user understands;
- `Wait`: nothing is wrong, the job needs something to happen first; requeue it soon (no attempt counted);
- `NotLeader`: this node lost its lease; stop at once and write nothing more.
The runner maps each to an outcome (`jobs/runner.py` classify); what follows is the pure `workflows/retry.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings
from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.events import record
from orchestry.runtime.types import Runtime


class TemporaryError(Exception):
    def __init__(self, reason: str = "", seconds: float | None = None) -> None:
        super().__init__(reason)
        self.seconds = seconds  # retry after this long instead of the default backoff (a webhook's schedule)


class PermanentError(Exception):
    pass


class Wait(Exception):
    def __init__(self, reason: str, seconds: float = 0.5) -> None:
        super().__init__(reason)
        self.seconds = seconds


class NotLeader(Exception):
    pass


@dataclass
class Fence:
    """This node's claim to act: its term, valid until a deadline on the monotonic clock.

    The deadline is the lease's expiry as measured when it was last renewed, less a safety margin, so
    a leader paused past its lease (SIGSTOP, a long GC, a frozen VM) finds it passed when it wakes up,
    before any other node can have started acting.
    """

    node: str
    term: int
    valid_until: Callable[[], float]

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until()

    def check(self) -> None:
        if not self.valid():
            raise NotLeader(f"node {self.node} no longer holds the lease of term {self.term}")


class Router(Protocol):
    """nginx as the jobs see it. `sync` recomputes the routing table from the database and pushes it,
    returning once nginx serves it (or raising TemporaryError)."""

    def sync(self) -> None: ...

    def serving(self, app: str) -> frozenset[str] | None:
        """Addresses nginx confirmed serving for the app; None when not known."""

    def in_flight(self, address: str) -> int | None:
        """Requests nginx has open to that address; None when not known."""


class HealthChecker(Protocol):
    def check_app(self, app: str) -> dict[str, Any]:
        """Probe every replica of the app now, record the verdicts, return them by replica."""


@dataclass
class JobContext:
    job_id: int
    kind: str
    app_name: str | None
    args: dict[str, Any]
    attempt: int
    sessions: sessionmaker[Session]
    runtime: Runtime
    settings: Settings
    fence: Fence
    router: Router | None = None
    health: HealthChecker | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    _step_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def step(self, name: str, status: str = "ok", **detail: Any) -> None:
        """Record one finished step of progress, visible at once in the job's API view."""
        self.fence.check()
        entry = {"step": name, "status": status, "at": utcnow().isoformat(), **detail}
        # Steps of parallel starts arrive from several threads: the list is read and written whole, so one
        # writer at a time, or a step would be lost.
        with self._step_lock, self.sessions.begin() as session:
            if not jobq.add_step(
                session, self.job_id, node=self.fence.node, term=self.fence.term, step=entry, now=utcnow()
            ):
                raise NotLeader(f"job {self.job_id} is no longer claimed by {self.fence.node}")
        self.steps.append(entry)

    def event(self, session: Session, type_: str, message: str, **details: Any) -> None:
        record(session, type_, message, actor=f"job:{self.job_id}", app_name=self.app_name, **details)


Handler = Callable[[JobContext], dict[str, Any] | None]
