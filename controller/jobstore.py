"""APScheduler's SQLAlchemy job store, written only under this node's current term.

The scheduler checks that this node leads before it processes due jobs (`FencedScheduler`), but a leader
paused between that check and the write of a job's next run time (SIGSTOP, a frozen VM) wakes up and
writes it anyway, into the table the new leader now schedules from. Every write here therefore carries the
fence twice: the monotonic deadline right before, and the lease (holder, term, expiry by the database's
clock) as a condition of the statement itself. A write the term no longer covers changes nothing.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
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


class FencedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    def __init__(self, engine: Engine, fence: Callable[[], Fence]) -> None:
        super().__init__(engine=engine)
        self._fence = fence

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
        with Session(self.engine) as session, session.begin():
            changed = fenced_write(session, fence.node, fence.term, build)
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
