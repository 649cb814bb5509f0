"""The dispatcher: claims queued jobs while this node leads and runs them on a bounded thread pool.

Wake paths: everything that can make a job runnable, and what notices it. A poke only makes the dispatcher
look sooner; the claim (`jobs.claim_next`) decides, so a spurious or missed wake-up changes no outcome.

1. In-process wake (`wake()`): the API in this `orchestry serve` process after its enqueue commits
   (web/context.py `wake_dispatcher`); the leader's own enqueuers (reconcile sweep, health repairs, autoscaler);
   and each job's end here (its app's lock is free, or it requeued itself). The common path: milliseconds.
2. PostgreSQL NOTIFY (controller/notify.py): `enqueue` sends it in the enqueuing transaction, delivered at
   COMMIT, so an enqueue on another node or by another process (a follower's API, the CLI) reaches the
   leader at once. bench/job_latency measures this path (p50 12 ms).
3. The poll: the floor under everything else. A retry or a wait is woken for at its `run_after` (the idle
   read returns the earliest one). What no one pokes for, an enqueue by another process on SQLite (no NOTIFY)
   or a NOTIFY lost while the listener reconnects, waits at most `POLL_SECONDS`. It was a 0.25 s poll whatever
   the queue held: 7 % of an idle leader's CPU (issue 10).

There used to be a fourth, an APScheduler `dispatch` job poking every 1 s; the 0.25 s poll covers all it
could find, sooner, so it was dropped (bench/job_latency showed no change; the README has the figures).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings
from orchestry.controller.leadership import Leadership
from orchestry.jobs.base import HealthChecker, Router
from orchestry.jobs.runner import run_job
from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.db import reads_of
from orchestry.runtime.types import Runtime

log = logging.getLogger("orchestry.dispatch")
POLL_SECONDS = 1.0  # the longest an idle dispatcher sleeps
SOONEST_SECONDS = 0.05  # the shortest: a `run_after` just past (or a clock a little ahead) is not a busy loop
STALE_CHECK_SECONDS = 5.0  # how often the leader looks for jobs left `running` under an ended fence


def poll_after(earliest: datetime | None, now: datetime) -> float:
    """Seconds an idle dispatcher sleeps: until the earliest queued job's `run_after`, within
    [SOONEST_SECONDS, POLL_SECONDS] (no queued job: POLL_SECONDS)."""
    if earliest is None:
        return POLL_SECONDS
    return min(POLL_SECONDS, max(SOONEST_SECONDS, (earliest - now).total_seconds()))


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: Runtime,
        settings: Settings,
        leadership: Leadership,
        router: Router | None = None,
        health: HealthChecker | None = None,
    ) -> None:
        self.router = router
        self.health = health
        self.sessions = sessions
        self.runtime = runtime
        self.settings = settings
        self.leadership = leadership
        self.workers = settings.job_workers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._free = threading.Semaphore(self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="orchestry-job")
        self._thread: threading.Thread | None = None
        self.in_flight: set[int] = set()
        # Held from a claim until its job is in `in_flight`, and by the stale-job check: the check never
        # takes a job just claimed here for one nobody runs.
        self._claiming = threading.Lock()
        self._reads = reads_of(sessions)  # the idle poll reads, takes no write lock
        self._next_check = 0.0
        self.next_poll = POLL_SECONDS  # set by each dispatch: until the earliest queued job's run_after

    def wake(self, *_: Any) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="orchestry-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; running handlers notice the void fence at their next step and give up."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def shutdown(self) -> None:
        self.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.next_poll)
            self._wake.clear()
            try:
                if time.monotonic() >= self._next_check:
                    self._next_check = time.monotonic() + STALE_CHECK_SECONDS
                    self.requeue_stale()
                self.dispatch_available()
            except SQLAlchemyError as exc:
                log.warning("dispatch failed", extra={"error": str(exc).splitlines()[0]})
                self._stop.wait(1.0)

    def dispatch_available(self) -> int:
        claimed = 0
        self.next_poll = POLL_SECONDS  # a job's end wakes the loop: a full pool or a busy lock needs no poll
        while not self._stop.is_set() and self.leadership.leading:
            if not self._free.acquire(blocking=False):
                return claimed
            fence = self.leadership.fence()
            try:
                with self._reads() as session:
                    due, earliest = jobq.queue_state(session)
                if not due:
                    self._free.release()
                    self.next_poll = poll_after(earliest, utcnow())
                    return claimed
                with self._claiming:
                    with self.sessions.begin() as session:
                        job = jobq.claim_next(session, node=fence.node, term=fence.term)
                    if job is not None:
                        self.in_flight.add(job.id)
            except BaseException:
                self._free.release()
                raise
            if job is None:
                self._free.release()
                return claimed
            claimed += 1
            self._pool.submit(self._run, job, fence)
        return claimed

    def requeue_stale(self) -> list[int]:
        """Jobs `running` under a fence that ended (an older term, or this node's own claim that no thread
        here runs any more) go back to the queue: none is left behind until the next election."""
        fence = self.leadership.fence()
        if fence.term < 0 or not self.leadership.leading:
            return []
        with self._claiming, self.sessions.begin() as session:
            ids = jobq.requeue_abandoned(session, node=fence.node, term=fence.term, running_here=set(self.in_flight))
        if ids:
            log.warning("requeued jobs left running under an ended fence", extra={"jobs": ids, "term": fence.term})
            self._wake.set()
        return ids

    def _run(self, job: jobq.Claimed, fence: Any) -> None:
        try:
            run_job(
                job,
                sessions=self.sessions,
                runtime=self.runtime,
                settings=self.settings,
                fence=fence,
                router=self.router,
                health=self.health,
            )
        except Exception:
            log.exception("job runner crashed", extra={"job_id": job.id})
        finally:
            self.in_flight.discard(job.id)
            self._free.release()
            self._wake.set()  # a lock may have been freed, or the job requeued itself
