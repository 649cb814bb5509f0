"""The job queue and the lease on a real database (SQLite or PostgreSQL, per the run)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.cluster import Held, Lost, acquire_or_renew, current_lease, release
from orchestry.models.db import make_engine, make_sessionmaker

from conftest import DB_KIND


def lead(sessions, node: str = "a", seconds: float = 30) -> int:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        held = acquire_or_renew(s, node, seconds)
    assert isinstance(held, Held)
    return held[0]


def claim_id(session, node: str, term: int) -> int | None:  # type: ignore[no-untyped-def]
    claimed = jobq.claim_next(session, node=node, term=term)
    return claimed.id if claimed is not None else None


def test_idempotency_key_returns_the_same_job(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        first = jobq.enqueue(s, "scale", app_name="a", lock="a", idempotency_key="k1")
        second = jobq.enqueue(s, "scale", app_name="a", lock="a", idempotency_key="k1")
    assert first.created and not second.created and first.job.id == second.job.id


def test_same_kind_joins_the_waiting_job_and_another_kind_supersedes_it(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        scale1 = jobq.enqueue(s, "scale", app_name="a", lock="a", args={"replicas": 2}).job
        scale2 = jobq.enqueue(s, "scale", app_name="a", lock="a", args={"replicas": 4})
        assert scale2.job.id == scale1.id and not scale2.created and scale2.job.args == {"replicas": 4}
        delete = jobq.enqueue(s, "delete", app_name="a", lock="a")
        assert delete.created
        s.flush()
        s.refresh(scale1)
        assert scale1.status == "cancelled" and "superseded" in (scale1.error or "")


def test_the_database_refuses_two_waiting_jobs_for_one_app(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        jobq.enqueue(s, "scale", app_name="a", lock="a")
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.add(jobq.Job(kind="stop", app_name="a", lock="a"))


def test_claims_need_the_lease_and_respect_locks(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        first = jobq.enqueue(s, "scale", app_name="a", lock="a").job.id
        other = jobq.enqueue(s, "scale", app_name="b", lock="b").job.id
    with sessions.begin() as s:
        assert claim_id(s, "a", 1) is None  # no lease yet
    term = lead(sessions)
    with sessions.begin() as s:
        assert claim_id(s, "a", term) == first
    with sessions.begin() as s:  # a second job of app `a` waits while the first runs
        follow_up = jobq.enqueue(s, "stop", app_name="a", lock="a").job.id
    with sessions.begin() as s:
        assert claim_id(s, "a", term) == other
    with sessions.begin() as s:
        assert claim_id(s, "a", term) is None
    with sessions.begin() as s:
        assert jobq.finish(s, first, node="a", term=term, status="succeeded", now=utcnow())
    with sessions.begin() as s:
        assert claim_id(s, "a", term) == follow_up
    with sessions.begin() as s:
        assert claim_id(s, "b", term) is None  # not b's lease


def test_a_deposed_leader_cannot_record_outcomes(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        job = jobq.enqueue(s, "scale", app_name="a", lock="a").job.id
    old = lead(sessions, "a", seconds=30)
    with sessions.begin() as s:
        assert claim_id(s, "a", old) == job
    with sessions.begin() as s:  # the lease expires; node b takes it and requeues a's job
        s.execute(text("UPDATE leader_lease SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    new = lead(sessions, "b")
    assert new == old + 1
    with sessions.begin() as s:
        assert jobq.requeue_abandoned(s, node="b", term=new) == [job]
    with sessions.begin() as s:
        assert not jobq.finish(s, job, node="a", term=old, status="succeeded", now=utcnow())
        assert not jobq.add_step(s, job, node="a", term=old, step={"step": "x"}, now=utcnow())
        assert claim_id(s, "a", old) is None
    with sessions.begin() as s:
        assert claim_id(s, "b", new) == job


def test_lease_acquire_renew_expire_release(sessions) -> None:  # type: ignore[no-untyped-def]
    term = lead(sessions, "a", seconds=30)
    with sessions.begin() as s:
        assert isinstance(acquire_or_renew(s, "b", 30), Lost)
        renewed = acquire_or_renew(s, "a", 30, term)
        assert isinstance(renewed, Held) and renewed.term == term and not renewed.new_term
    with sessions.begin() as s:
        assert release(s, "a", term)
    with sessions.begin() as s:
        taken = acquire_or_renew(s, "b", 30)
        assert taken is not None and taken[0] == term + 1
        assert current_lease(s).holder == "b"  # type: ignore[union-attr]
    with sessions.begin() as s:  # an expired lease is never renewed: taking it again is a new term
        s.execute(text("UPDATE leader_lease SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
    again = lead(sessions, "b")
    assert again == term + 2


@pytest.mark.skipif(DB_KIND != "postgresql", reason="concurrent claims are PostgreSQL's (SQLite serialises writers)")
def test_concurrent_claimers_take_each_job_once(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        for i in range(60):
            jobq.enqueue(s, "noop", args={"i": i})
    term = lead(sessions)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with sessions.begin() as s:
                job = claim_id(s, "a", term)
            if job is None:
                return
            with lock:
                claimed.append(job)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 60 and len(set(claimed)) == 60


def test_a_requeued_job_gives_way_to_a_newer_waiting_one(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        first = jobq.enqueue(s, "deploy", app_name="a", lock="a").job.id
    term = lead(sessions)
    with sessions.begin() as s:
        assert claim_id(s, "a", term) == first
    with sessions.begin() as s:  # a new request arrives while the first one runs
        newer = jobq.enqueue(s, "scale", app_name="a", lock="a").job.id
    with sessions.begin() as s:  # the first one waits for something: it must not collide with the newer one
        assert jobq.requeue(s, first, node="a", term=term, run_after=utcnow(), count_attempt=False)
    with sessions() as s:
        assert s.get(jobq.Job, first).status == "cancelled"  # type: ignore[union-attr]
        assert s.get(jobq.Job, newer).status == "queued"  # type: ignore[union-attr]


@pytest.mark.skipif(DB_KIND != "postgresql", reason="a paused session's row locks are PostgreSQL's (SQLite has none)")
def test_a_paused_holder_of_a_job_row_does_not_stop_the_next_leader_requeueing_it(db_url: str) -> None:
    """A leader paused (SIGSTOP) inside a transaction that wrote its job's row keeps that row locked: the
    server ends such an idle-in-transaction session, so the next leader's requeue waits seconds, not for ever."""
    from orchestry.models.db import IDLE_IN_TRANSACTION_MS

    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as s:
            job_id = jobq.enqueue(s, "noop").job.id
        old_term = lead(sessions, "old")
        with sessions.begin() as s:
            assert claim_id(s, "old", old_term) == job_id
        paused = sessions()
        paused.begin()
        paused.execute(text("UPDATE jobs SET error = 'step' WHERE id = :id"), {"id": job_id})  # then frozen
        with sessions.begin() as s:
            s.execute(text("UPDATE leader_lease SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
        new_term = lead(sessions, "new")
        began = time.monotonic()
        with sessions.begin() as s:
            assert jobq.requeue_abandoned(s, node="new", term=new_term) == [job_id]
        waited = time.monotonic() - began
        assert waited < IDLE_IN_TRANSACTION_MS / 1000 + 3
        with pytest.raises(Exception, match=r"idle-in-transaction|terminat|closed"):
            paused.commit()  # the server ended it: the frozen leader's write never lands
        paused.close()
    finally:
        engine.dispose()
