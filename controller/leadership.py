"""The lease loop: acquire or renew the leader lease every `renew_seconds`, step down when it cannot.

The fence deadline is measured on this node's monotonic clock from *before* the renewing transaction
began, less a margin: the database's expiry is at least that late, so when the deadline passes here no
other node can yet hold the lease. A paused process (SIGSTOP, a frozen VM) wakes up past its deadline
and stops acting before it could overlap with a new leader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry import __version__
from orchestry.jobs.base import Fence
from orchestry.models.cluster import acquire_or_renew, heartbeat, release

log = logging.getLogger("orchestry.leader")


class Leadership:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        node: str,
        address: str,
        lease_seconds: float,
        renew_seconds: float,
        on_elected: Callable[[int], None],
        on_deposed: Callable[[int], None],
    ) -> None:
        self.sessions = sessions
        self.node = node
        self.address = address
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.margin = min(1.0, lease_seconds * 0.2)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.term: int | None = None
        self._epoch = 0  # grows on every step-down: fences handed out before it are void, even for the same term
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestry-lease", daemon=True)

    @property
    def leading(self) -> bool:
        return self.term is not None and time.monotonic() < self._valid_until

    def fence(self) -> Fence:
        term, epoch = self.term, self._epoch
        if term is None:
            return Fence(self.node, -1, lambda: 0.0)
        return Fence(self.node, term, lambda: self._valid_until if self._epoch == epoch else 0.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and hand the lease over at once (a clean shutdown fails over in about a second)."""
        self._stop.set()
        self._thread.join(timeout=self.renew_seconds + 5)
        term = self.term
        if term is not None:
            self._step_down("shutting down")
            try:
                with self.sessions.begin() as session:
                    release(session, self.node, term)
            except SQLAlchemyError as exc:
                log.warning("could not release the lease", extra={"error": str(exc).splitlines()[0]})

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.renew_seconds)

    def tick(self) -> None:
        began = time.monotonic()
        try:
            with self.sessions.begin() as session:
                held = acquire_or_renew(session, self.node, self.lease_seconds)
                heartbeat(session, self.node, self.address, __version__)
        except SQLAlchemyError as exc:
            held = None
            if self.term is not None:
                log.warning("cannot renew the lease", extra={"error": str(exc).splitlines()[0]})
        if held is None:
            if self.term is not None:
                self._step_down("lease lost")
            return
        term, _expires = held
        if self.term is not None and term != self.term:
            self._step_down(f"term changed to {term}")
        self._valid_until = began + self.lease_seconds - self.margin
        if self.term is None:
            self.term = term
            log.info("elected leader", extra={"node": self.node, "term": term})
            try:
                self.on_elected(term)
            except Exception:
                log.exception("starting as leader failed; stepping down", extra={"term": term})
                self._step_down("start failed")

    def _step_down(self, reason: str) -> None:
        term = self.term
        if term is None:
            return
        self.term = None
        self._epoch += 1
        self._valid_until = 0.0
        log.warning("stepped down", extra={"node": self.node, "term": term, "reason": reason})
        try:
            self.on_deposed(term)
        except Exception:
            log.exception("stepping down failed", extra={"term": term})
