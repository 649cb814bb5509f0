"""The lease loop: acquire or renew the leader lease every `renew_seconds`, step down when it cannot.

The fence deadline is measured on this node's monotonic clock from *before* the renewing transaction
began, less a margin (`workflows/lease.py`): the database's expiry is at least that late, so when the
deadline passes here no other node can yet hold the lease. A paused process (SIGSTOP, a frozen VM) wakes
up past its deadline and stops acting before it could overlap with a new leader.

Followers sleep until the holder's lease runs out (capped at `renew_seconds`, to see a release soon).

Every election is a new term, even when a node takes back the lease it gave up (it stepped down when the
database was unreachable, or its process restarted): a term is one continuous leadership.

Events: whoever takes over a lapsed lease records `leader.lease_lost` for its previous holder (in the
taking transaction: the deposed node may be paused, dead or cut off, and must write nothing itself);
a clean shutdown records `leader.stepped_down` with the release, and so does a node taking back the lease
it had given up without releasing it. Every step-down is logged with its reason.

On PostgreSQL the lease transaction holds the lease row's lock for a few milliseconds. A holder paused in
the middle of it would block every other node, so that transaction sets a short `lock_timeout` (a follower
just tries again) and `idle_in_transaction_session_timeout` (the server ends a paused holder's session).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry import __version__
from orchestry.jobs.base import Fence
from orchestry.models.cluster import Held, acquire_or_renew, heartbeat, release, short_locks
from orchestry.models.events import record
from orchestry.workflows.lease import fence_deadline, follower_wait, margin_seconds

log = logging.getLogger("orchestry.leader")
NOT_LEADING_POLL_SECONDS = 0.5
# A node's heartbeat (its `controller_nodes` row: alive within 3 leases, the cluster page's ages) is written
# at most this often: at every renewal (0.5 s) it was a second write transaction each time.
HEARTBEAT_SECONDS = 1.0


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
        self.margin = margin_seconds(lease_seconds)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.term: int | None = None
        self._epoch = 0  # grows on every step-down: fences handed out before it are void, even for the same term
        self._valid_until = 0.0
        self._retry_after = 0.0  # after a failed start, not before this (monotonic)
        self._beat_at = -HEARTBEAT_SECONDS  # the last heartbeat written (monotonic)
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
        """Join the members at once (a node that answers the API is listed), then compete for the lease."""
        try:
            with self.sessions.begin() as session:
                heartbeat(session, self.node, self.address, __version__)
        except SQLAlchemyError as exc:  # the lease loop retries, and reports the outage
            log.warning("cannot record this node's heartbeat", extra={"error": str(exc).splitlines()[0]})
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and hand the lease over at once (a clean shutdown fails over in about a second)."""
        self._stop.set()
        self._thread.join(timeout=self.renew_seconds + 5)
        term = self.term
        if term is None:
            return
        self._step_down("shutting down")
        try:
            with self.sessions.begin() as session:
                if release(session, self.node, term):
                    record(
                        session,
                        "leader.stepped_down",
                        f"node {self.node} released the lease (term {term}): shutting down",
                        actor=f"node:{self.node}",
                        term=term,
                        reason="shutting down",
                    )
        except SQLAlchemyError as exc:
            log.warning("could not release the lease", extra={"error": str(exc).splitlines()[0]})

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:  # never let the lease thread die: a node without it would never lead again
                log.exception("lease loop failed")
                wait = self.renew_seconds
            self._stop.wait(wait)

    def tick(self) -> float:
        """One attempt to acquire or renew; returns the seconds until the next one."""
        began = time.monotonic()
        if self.term is None and began < self._retry_after:
            return self._retry_after - began
        try:
            with self.sessions.begin() as session:
                short_locks(session, self.renew_seconds)
                held = acquire_or_renew(session, self.node, self.lease_seconds, self.term)
                if isinstance(held, Held) and held.previous is not None:
                    self._record_previous(session, held)
        except SQLAlchemyError as exc:
            if self.term is not None:
                log.warning("cannot renew the lease", extra={"error": str(exc).splitlines()[0]})
                self._step_down("cannot reach the database to renew")
            return self.renew_seconds
        if time.monotonic() - self._beat_at >= HEARTBEAT_SECONDS:
            self._heartbeat()
        if not isinstance(held, Held):
            if held.holder == self.node and self.term is not None:
                log.warning(
                    "the lease is held under this node's name in another term: is a second process running "
                    "with this node id?",
                    extra={"node": self.node, "term": self.term},
                )
            if self.term is not None:
                self._step_down(f"lease held by {held.holder}" if held.holder else "lease expired")
            return follower_wait(held.now, held.expires_at, self.renew_seconds)
        if self.term is not None and held.term != self.term:
            self._step_down(f"term changed to {held.term}")
        self._valid_until = fence_deadline(began, self.lease_seconds)
        if self.term is None:
            self._elected(held)
        return self.renew_seconds

    def _heartbeat(self) -> None:
        """This node is alive, in a transaction of its own after the lease's: a heartbeat that waits for
        the node's row (a route report holds it) never makes the renewal fail."""
        self._beat_at = time.monotonic()
        try:
            with self.sessions.begin() as session:
                short_locks(session, self.renew_seconds)
                heartbeat(session, self.node, self.address, __version__)
        except SQLAlchemyError as exc:
            log.warning("cannot record this node's heartbeat", extra={"error": str(exc).splitlines()[0]})

    def _record_previous(self, session: Session, held: Held) -> None:
        """The end of the term this one replaces, as an event (its holder may be dead or cut off)."""
        prev = held.previous
        assert prev is not None
        if prev.lapsed:
            type_, why = "leader.lease_lost", f"not renewed before {prev.expires_at.isoformat()}"
        else:
            type_, why = "leader.stepped_down", "it had stepped down without releasing the lease"
        record(
            session,
            type_,
            f"node {prev.holder} lost the lease of term {prev.term}: {why}; "
            f"node {self.node} took it (term {held.term})",
            actor=f"node:{self.node}",
            node=prev.holder,
            term=prev.term,
            expires_at=prev.expires_at.isoformat(),
            successor=self.node,
            successor_term=held.term,
        )

    def _elected(self, held: Held) -> None:
        self.term = held.term
        fields: dict[str, Any] = {"node": self.node, "term": held.term, "acquired_at": held.acquired_at.isoformat()}
        if held.previous is not None:
            fields.update(previous=held.previous.holder, previous_term=held.previous.term)
        log.info("elected leader", extra=fields)
        try:
            self.on_elected(held.term)
        except Exception as exc:
            # Hand the lease over and stay out for a lease's length: another node may start where this one
            # cannot, and this one does not burn a new term every renew interval meanwhile.
            if isinstance(exc, SQLAlchemyError):  # an outage or a lock, not a bug: one line, no traceback
                error = str(exc).splitlines()[0]
                log.warning("starting as leader failed; stepping down", extra={"term": held.term, "error": error})
            else:
                log.exception("starting as leader failed; stepping down", extra={"term": held.term})
            self._step_down("start failed")
            self._retry_after = time.monotonic() + self.lease_seconds
            with contextlib.suppress(SQLAlchemyError), self.sessions.begin() as session:
                release(session, self.node, held.term)
            return
        # The failover is over when this line is written: the bench and the tests time it.
        log.info("leading: scheduler running", extra=fields)

    def _step_down(self, reason: str) -> None:
        term = self.term
        if term is None:
            return
        # The fences of this term end now, or earlier if the deadline passed already (a paused node, a lost
        # database): logged as wall-clock time, so an audit can compare it with the next term's start.
        now = time.monotonic()
        fence_ended = time.time() - max(0.0, now - self._valid_until)
        self.term = None
        self._epoch += 1
        self._valid_until = 0.0
        # A clean shutdown's step-down is routine (info); any other is worth a warning.
        log.log(
            logging.INFO if reason == "shutting down" else logging.WARNING,
            "stepped down",
            extra={"node": self.node, "term": term, "reason": reason, "fence_ended": round(fence_ended, 3)},
        )
        try:
            self.on_deposed(term)
        except Exception:
            log.exception("stepping down failed", extra={"term": term})


class FencedScheduler(BackgroundScheduler):  # type: ignore[misc]
    """APScheduler that runs due jobs only while this node leads (by its fence, not only its pause state).

    A leader paused past its lease wakes up with its scheduler still resumed until the lease loop notices;
    without this it would run (and write the next run times of) the shared job store's jobs meanwhile."""

    def __init__(self, leading: Callable[[], bool], **options: Any) -> None:
        super().__init__(**options)
        self._leading = leading

    def _process_jobs(self) -> float | None:
        if self.state == STATE_RUNNING and not self._leading():
            return NOT_LEADING_POLL_SECONDS
        try:
            wait: float | None = super()._process_jobs()
        except SQLAlchemyError as exc:
            # APScheduler catches a failed read of the job store but not a failed write of a next run time:
            # uncaught, it ends the scheduler's thread for good ("Exception in thread APScheduler"), and this
            # node would never run a periodic job again, even after the database is back. Try again soon.
            log.warning("scheduler round skipped: the database did not answer", extra={"error": _line(exc)})
            return NOT_LEADING_POLL_SECONDS
        return wait


def _line(exc: SQLAlchemyError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
