"""No job is left behind (issue 10): a job whose fence ended goes back to the queue with the reason in its
history, and the next holder of the lease (here the same node, same term) runs it again. Real database
(SQLite or PostgreSQL), real lease, real dispatcher; the handler is a test one that blocks on demand."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import load_settings
from orchestry.controller.dispatcher import POLL_SECONDS, SOONEST_SECONDS, Dispatcher, poll_after
from orchestry.controller.leadership import Leadership
from orchestry.jobs import registry
from orchestry.jobs.base import JobContext
from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow

from conftest import wait_for


def leader(sessions: sessionmaker[Session], node: str = "n1") -> Leadership:
    """A lease driven by hand (no thread): the test decides when it renews."""
    lead = Leadership(
        sessions,
        node=node,
        address="http://x",
        lease_seconds=30,
        renew_seconds=0.5,
        on_elected=lambda term: None,
        on_deposed=lambda term: None,
    )
    lead.tick()
    assert lead.leading
    return lead


class Blocking:
    """A handler whose first attempt waits for the test, then checks its fence (as a Docker call would)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self.attempts: list[int] = []

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        self.attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            self.started.set()
            assert self.go.wait(30)
            ctx.fence.check()
        return {"ran": ctx.attempt}


@pytest.fixture
def blocking(monkeypatch: pytest.MonkeyPatch) -> Blocking:
    handler = Blocking()
    monkeypatch.setitem(registry.HANDLERS, "test-block", handler)
    return handler


def job_row(sessions: sessionmaker[Session], job_id: int) -> jobq.Job:
    with sessions() as s:
        job = s.get(jobq.Job, job_id)
        assert job is not None
        return job


def test_a_late_renewal_hands_the_job_back_and_the_same_term_runs_it_again(
    sessions: sessionmaker[Session], db_url: str, blocking: Blocking
) -> None:
    lead = leader(sessions)
    term = lead.term
    dispatcher = Dispatcher(sessions, None, load_settings({"database_url": db_url}), lead)  # type: ignore[arg-type]
    with sessions.begin() as s:
        job_id = jobq.enqueue(s, "test-block", app_name="web", lock="web").job.id
    dispatcher.start()
    try:
        assert blocking.started.wait(10)
        lead._valid_until = time.monotonic() - 0.1  # the renewal is late: this term's fence ended for now
        blocking.go.set()
        wait_for(lambda: job_row(sessions, job_id).status != "running", 10)
        lead.tick()  # the late renewal arrives: same node, same term
        assert lead.term == term and lead.leading
        wait_for(lambda: job_row(sessions, job_id).status == "succeeded", 10)
    finally:
        dispatcher.shutdown()
    job = job_row(sessions, job_id)
    assert (job.status, job.attempts, job.result, blocking.attempts) == ("succeeded", 2, {"ran": 2}, [1, 2])
    assert job.history is not None and len(job.history) == 1
    assert job.history[0] | {"at": None} == {
        "attempt": 1,
        "node": "n1",
        "term": term,
        "outcome": "abandoned",
        "reason": "abandoned: lost leadership",
        "at": None,
    }


def test_the_periodic_check_requeues_a_job_nobody_runs(sessions: sessionmaker[Session], db_url: str) -> None:
    """A job left `running` by this node (its hand-back failed) or under an older term goes back to the
    queue; one a thread here still runs stays."""
    lead = leader(sessions)
    assert lead.term is not None
    with sessions.begin() as s:
        left = jobq.enqueue(s, "scale", app_name="a", lock="a").job.id
        busy = jobq.enqueue(s, "scale", app_name="b", lock="b").job.id
    with sessions.begin() as s:
        claimed = {jobq.claim_next(s, node="n1", term=lead.term).id for _ in range(2)}  # type: ignore[union-attr]
    assert claimed == {left, busy}
    dispatcher = Dispatcher(sessions, None, load_settings({"database_url": db_url}), lead)  # type: ignore[arg-type]
    dispatcher.in_flight.add(busy)
    assert dispatcher.requeue_stale() == [left]
    assert (job_row(sessions, left).status, job_row(sessions, busy).status) == ("queued", "running")
    assert job_row(sessions, left).history[0]["outcome"] == "abandoned"  # type: ignore[index]
    dispatcher.in_flight.clear()
    assert dispatcher.requeue_stale() == [busy]


def test_a_repeated_delete_of_an_app_whose_delete_job_was_left_running_gets_a_job_that_runs(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    """1,000 DELETEs, 7 delete jobs left `running` by a term whose fence ended, their apps stuck `deleting`:
    a repeated DELETE answers that job, and the leader's periodic check hands it back to the queue."""
    from orchestry.web.app import create_app

    settings = load_settings({"database_url": db_url})
    api = create_app(settings, sessions.kw["bind"]).test_client()
    doc = "apiVersion: v1\nkind: App\nmetadata: {name: gone}\nspec:\n  image: busybox\n  ports: [{containerPort: 80}]\n"
    assert api.post("/api/v1/apps", data=doc, content_type="application/yaml").status_code == 201
    job_id = api.delete("/api/v1/apps/gone").get_json()["job"]["id"]
    old = leader(sessions, "n1")
    assert old.term is not None
    with sessions.begin() as s:
        assert jobq.claim_next(s, node="n1", term=old.term).id == job_id  # type: ignore[union-attr]
    old._valid_until = 0.0  # n1's fence ended (it was paused): its job stays `running`
    new = Leadership(
        sessions,
        node="n2",
        address="http://y",
        lease_seconds=30,
        renew_seconds=0.5,
        on_elected=lambda term: None,
        on_deposed=lambda term: None,
    )
    with sessions.begin() as s:  # n1's lease ran out
        s.execute(text("UPDATE leader_lease SET expires_at = :t"), {"t": utcnow()})
    new.tick()
    assert new.leading and new.term == old.term + 1
    again = api.delete("/api/v1/apps/gone")
    assert again.status_code == 202 and again.get_json()["job"]["id"] == job_id
    dispatcher = Dispatcher(sessions, None, settings, new)  # type: ignore[arg-type]
    assert dispatcher.requeue_stale() == [job_id]
    with sessions.begin() as s:
        assert jobq.claim_next(s, node="n2", term=new.term).id == job_id  # type: ignore[union-attr]


def test_the_idle_read_says_what_is_due_and_when_the_next_comes(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        assert jobq.queue_state(s) == (False, None)
    with sessions.begin() as s:
        first = jobq.enqueue(s, "noop").job.id
        later = jobq.enqueue(s, "noop").job.id
    soon, far = utcnow() + timedelta(seconds=30), utcnow() + timedelta(seconds=90)
    with sessions.begin() as s:
        s.execute(update(jobq.Job).where(jobq.Job.id == first).values(run_after=soon))
        s.execute(update(jobq.Job).where(jobq.Job.id == later).values(run_after=far))
    with sessions() as s:
        due, earliest = jobq.queue_state(s)
    assert not due and earliest is not None
    assert abs((earliest - soon).total_seconds()) < 0.01
    with sessions() as s:
        assert jobq.queue_state(s, now=soon + timedelta(seconds=1))[0] is True


@pytest.mark.parametrize(
    ("in_seconds", "sleep"),
    [
        (None, POLL_SECONDS),  # nothing queued: the poll, for what no one pokes for
        (0.3, 0.3),  # a wait or a retry comes due: woken for it, not at the next poll
        (30, POLL_SECONDS),  # far off: the poll still comes first
        (-5, SOONEST_SECONDS),  # past (another clock): soon, but never a busy loop
        (0.001, SOONEST_SECONDS),
    ],
)
def test_an_idle_dispatcher_sleeps_until_the_next_job_is_due(in_seconds: float | None, sleep: float) -> None:
    now = utcnow()
    earliest = None if in_seconds is None else now + timedelta(seconds=in_seconds)
    assert poll_after(earliest, now) == pytest.approx(sleep)


def test_a_job_waiting_a_moment_is_claimed_when_due_not_a_poll_later(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    lead = leader(sessions)
    dispatcher = Dispatcher(sessions, None, load_settings({"database_url": db_url}), lead)  # type: ignore[arg-type]
    with sessions.begin() as s:
        job = jobq.enqueue(s, "noop").job.id
        s.execute(update(jobq.Job).where(jobq.Job.id == job).values(run_after=utcnow() + timedelta(seconds=0.3)))
    assert dispatcher.dispatch_available() == 0
    assert SOONEST_SECONDS <= dispatcher.next_poll <= 0.31
    with sessions.begin() as s:
        s.execute(delete(jobq.Job).where(jobq.Job.id == job))
    assert dispatcher.dispatch_available() == 0 and dispatcher.next_poll == POLL_SECONDS
