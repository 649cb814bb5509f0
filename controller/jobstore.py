"""APScheduler's SQLAlchemy job store, written only under this node's current term.

The scheduler checks that this node leads before it processes due jobs (`FencedScheduler`), but a leader
paused between that check and the write of a job's next run time (SIGSTOP, a frozen VM) wakes up and
writes it anyway, into the table the new leader now schedules from. Every write here therefore carries the
fence twice: the monotonic deadline right before, and the lease (holder, term, expiry by the database's
clock) as a condition of the statement itself. A write the term no longer covers changes nothing.

The scheduler asks every store for its due jobs and its next run time at each wake-up, and the in-memory
health tick wakes it twice a second: two reads of this table each time, ~12 % of an idle leader's CPU
(issue 10). Only the leader's scheduler writes the table, through this store, so the store keeps its next run
time and reads again after its own writes, when that time comes, or once MEMO_SECONDS passed.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from orchestry.jobs.base import Fence
from orchestry.models.schedule import Build, delete_row, fenced_write, insert_absent, update_row

log = logging.getLogger("orchestry.scheduler")
MEMO_SECONDS = 5.0  # the longest the next run time is kept without reading the table
_UNREAD = object()


class FencedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    def __init__(self, engine: Engine, fence: Callable[[], Fence]) -> None:
        super().__init__(engine=engine)
        self._fence = fence
        self._memo_lock = threading.Lock()
        self._next: Any = _UNREAD  # the table's next run time (None: no job) as last read, or _UNREAD
        self._read_at = 0.0
        self._writes = 0  # writes ended (a read that overlapped one is not kept)

    def _forget(self) -> None:
        with self._memo_lock:
            self._next = _UNREAD
            self._writes += 1

    def get_next_run_time(self) -> datetime | None:
        with self._memo_lock:
            if self._next is not _UNREAD and time.monotonic() - self._read_at < MEMO_SECONDS:
                return self._next  # type: ignore[no-any-return]
            writes = self._writes
        read_at = time.monotonic()
        found: datetime | None = super().get_next_run_time()
        with self._memo_lock:
            if self._writes == writes:  # no write ended during the read: what it saw is still the table
                self._next, self._read_at = found, read_at
        return found

    def get_due_jobs(self, now: datetime) -> list[Job]:
        """Nothing before the next run time (kept, see above); the table's due jobs from then on."""
        upcoming = self.get_next_run_time()
        if upcoming is None or upcoming > now:
            return []
        self._forget()  # they run now, and their next run times are written
        jobs: list[Job] = super().get_due_jobs(now)
        return jobs

    def _state(self, job: Job) -> dict[str, Any]:
        return {
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
        }

    def _write(self, what: str, job_id: str, build: Build) -> int | None:
        """Rows the statement changed under the current term; None when the term no longer covers it."""
        fence = self._fence()
        if not fence.valid():
            log.info("job store not written: this node does not lead", extra={"job": job_id, "write": what})
            return None
        try:
            with Session(self.engine) as session, session.begin():
                changed = fenced_write(session, fence.node, fence.term, build)
        finally:  # after the commit: a read that ran meanwhile may have kept the table as it was before
            self._forget()
        if changed is not None:
            return changed
        log.info(
            "job store not written: the term ended",
            extra={"job": job_id, "write": what, "node": fence.node, "term": fence.term},
        )
        return None

    def add_job(self, job: Job) -> None:
        if self._write("add", job.id, insert_absent(self.jobs_t, {"id": job.id, **self._state(job)})) == 0:
            raise ConflictingIdError(job.id)

    def update_job(self, job: Job) -> None:
        changed = self._write("update", job.id, update_row(self.jobs_t, job.id, self._state(job)))
        if changed == 0:
            raise JobLookupError(job.id)

    def remove_job(self, job_id: str) -> None:
        if self._write("remove", job_id, delete_row(self.jobs_t, job_id)) == 0:
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        self._forget()
        super().remove_all_jobs()
