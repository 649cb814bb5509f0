"""The scheduler's job store on a real database: written under the current term, and under no other.

The chaos test found the gap this closes: a leader paused inside APScheduler's loop woke up and wrote a job's
next run time into the table its successor was scheduling from."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text, update

from orchestry.controller.jobstore import FencedJobStore
from orchestry.jobs.base import Fence
from orchestry.models.cluster import LEASE_NAME, Held, LeaderLease, acquire_or_renew
from orchestry.models.db import make_engine, make_sessionmaker

from conftest import start_server, stop_server, wait_for

TICK = "orchestry.controller.periodic:dispatch"


class Setup:
    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        self.sessions = make_sessionmaker(self.engine)
        with self.sessions.begin() as s:
            held = acquire_or_renew(s, "a", 60)
        assert isinstance(held, Held)
        self.term = held.term
        self.deadline = float("inf")
        self.fence = Fence("a", self.term, lambda: self.deadline)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": FencedJobStore(self.engine, lambda: self.fence)}, timezone=UTC
        )
        self.scheduler.start(paused=True)

    def stored(self) -> dict[str, float | None]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT id, next_run_time FROM apscheduler_jobs")).all())  # type: ignore[arg-type]

    def lease_taken_by_another(self) -> None:
        with self.sessions.begin() as s:
            s.execute(update(LeaderLease).where(LeaderLease.name == LEASE_NAME).values(holder="b", term=self.term + 1))


@pytest.fixture
def setup(db_url: str) -> Iterator[Setup]:
    s = Setup(db_url)
    yield s
    s.scheduler.shutdown(wait=False)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_the_leader_adds_updates_and_removes(setup: Setup) -> None:
    setup.scheduler.add_job(TICK, "interval", seconds=5, id="tick", next_run_time=later(5))
    assert list(setup.stored()) == ["tick"]
    with pytest.raises(ConflictingIdError):
        setup.scheduler.add_job(TICK, "interval", seconds=5, id="tick")
    setup.scheduler.add_job(TICK, "interval", seconds=7, id="tick", replace_existing=True, next_run_time=later(60))
    assert setup.stored()["tick"] == pytest.approx(later(60).timestamp(), abs=5)
    setup.scheduler.modify_job("tick", next_run_time=later(600))
    assert setup.stored()["tick"] == pytest.approx(later(600).timestamp(), abs=5)
    setup.scheduler.remove_job("tick")
    assert setup.stored() == {}
    store = setup.scheduler._jobstores["default"]
    with pytest.raises(JobLookupError):
        store.remove_job("tick")
    with pytest.raises(JobLookupError):
        store.update_job(_detached(setup, "ghost"))


def _detached(setup: Setup, job_id: str) -> Any:
    """A job object whose row does not exist."""
    job = setup.scheduler.add_job(TICK, "interval", seconds=5, id=job_id, next_run_time=later(5))
    setup.scheduler.remove_job(job_id)
    return job


@pytest.mark.parametrize("how", ["lease taken by another node", "fence deadline passed"])
def test_an_ended_term_writes_nothing(setup: Setup, how: str) -> None:
    setup.scheduler.add_job(TICK, "interval", seconds=5, id="tick", next_run_time=later(5))
    setup.scheduler.add_job(TICK, "interval", seconds=5, id="kept", next_run_time=later(5))
    before = setup.stored()
    if how == "fence deadline passed":
        setup.deadline = 0.0  # paused past the lease: the monotonic clock says so first
    else:
        setup.lease_taken_by_another()  # the statement's own condition says so
    setup.scheduler.modify_job("tick", next_run_time=later(600))  # what the paused leader's loop does
    setup.scheduler.remove_job("kept")
    setup.scheduler.add_job(TICK, "interval", seconds=5, id="new", next_run_time=later(5))
    setup.scheduler.add_job(TICK, "interval", seconds=9, id="tick", replace_existing=True, next_run_time=later(900))
    assert setup.stored() == before


def test_a_new_leader_removes_the_old_dispatch_poke(db_url: str, tmp_path: Path) -> None:
    """The APScheduler `dispatch` job (a poke every 1 s) is gone: the dispatcher's own poll covers it. A job store
    written by an older version still holds it; the leader removes it when elected."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    engine = make_engine(db_url)
    older = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(engine=engine)}, timezone=UTC)
    older.start(paused=True)
    older.add_job(TICK, "interval", seconds=1, id="dispatch")
    older.shutdown(wait=False)

    def stored() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars())

    assert "dispatch" in stored()
    server = start_server(db_url, tmp_path, extra_env={"ORCHESTRY_NGINX": "off"})
    try:
        wait_for(lambda: "reconcile" in stored(), timeout=20)  # positive control: this leader stores its sweeps
        assert "dispatch" not in stored()
    finally:
        stop_server(server)
        engine.dispose()


def test_the_next_run_time_is_read_again_only_after_a_write(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler asks its stores for due jobs and their next run time at every wake-up (the in-memory
    health tick wakes it twice a second): the table is read again only after this store wrote it, or once
    MEMO_SECONDS passed (a write it did not make: another node's, before this one led)."""
    store: FencedJobStore = setup.scheduler._lookup_jobstore("default")
    setup.scheduler.add_job(TICK, "interval", seconds=60, id="sweep", next_run_time=later(30))
    reads: list[str] = []
    real_jobs, real_next = SQLAlchemyJobStore._get_jobs, SQLAlchemyJobStore.get_next_run_time

    def counted(self: Any, *conditions: Any) -> Any:
        reads.append("jobs")
        return real_jobs(self, *conditions)

    def counted_next(self: Any) -> Any:
        reads.append("next")
        return real_next(self)

    monkeypatch.setattr(SQLAlchemyJobStore, "_get_jobs", counted)
    monkeypatch.setattr(SQLAlchemyJobStore, "get_next_run_time", counted_next)
    first = store.get_next_run_time()
    assert first is not None and abs((first - later(30)).total_seconds()) < 1
    reads.clear()
    for _ in range(5):
        assert store.get_next_run_time() == first
        assert store.get_due_jobs(datetime.now(UTC)) == []  # not due before `first`: nothing to read
    assert reads == []
    assert [j.id for j in store.get_due_jobs(first + timedelta(seconds=1))] == ["sweep"]  # due: read
    setup.scheduler.modify_job("sweep", next_run_time=later(5))  # a write: the memo is gone
    again = store.get_next_run_time()
    assert again is not None and abs((again - later(5)).total_seconds()) < 1
    monkeypatch.setattr("orchestry.controller.jobstore.MEMO_SECONDS", 0.0)
    reads.clear()
    store.get_next_run_time()
    assert reads == ["next"]
