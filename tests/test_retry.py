"""The retry policy: the pure decision (workflows/retry.py) as a table of cases, the runner's classification of
exceptions, and the runner applying a decision to a real job row (SQLite or PostgreSQL, per the run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fakes import FakeRuntime
from sqlalchemy import select

from orchestry.config import load_settings
from orchestry.jobs import registry
from orchestry.jobs.base import Fence, JobContext, NotLeader, PermanentError, TemporaryError, Wait
from orchestry.jobs.runner import classify, run_job
from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.cluster import Held, acquire_or_renew
from orchestry.workflows.retry import WAIT_LIMIT, Decision, Outcome, backoff, decide

S = timedelta(seconds=1)
M = 5  # max attempts

# outcome, attempt, waited, decision
CASES: dict[str, tuple[Outcome, int, timedelta, Decision]] = {
    "lost leadership: abandon, write nothing": (
        Outcome("not_leader", "node a no longer holds the lease of term 3"),
        1,
        S,
        Decision("abandon", error="node a no longer holds the lease of term 3"),
    ),
    "lost leadership on the last attempt: still abandon": (
        Outcome("not_leader", "x"),
        M,
        S,
        Decision("abandon", error="x"),
    ),
    "a wait requeues after its own delay and gives its attempt back": (
        Outcome("wait", "replica web-1 not healthy yet", 0.5),
        1,
        S,
        Decision("wait", 0.5 * S, "waiting: replica web-1 not healthy yet", count_attempt=False),
    ),
    "a wait past the last attempt still waits (waits are not attempts)": (
        Outcome("wait", "draining", 2.0),
        M + 3,
        S,
        Decision("wait", 2 * S, "waiting: draining", count_attempt=False),
    ),
    "a wait at exactly the limit still waits": (
        Outcome("wait", "draining", 0.5),
        1,
        WAIT_LIMIT,
        Decision("wait", 0.5 * S, "waiting: draining", count_attempt=False),
    ),
    "a wait past the limit fails": (
        Outcome("wait", "replica web-1 not healthy yet", 0.5),
        1,
        WAIT_LIMIT + S,
        Decision("fail", error="gave up after waiting 600s: replica web-1 not healthy yet"),
    ),
    "permanent: fail at once, on the first attempt": (
        Outcome("permanent", "image x is not available locally and could not be pulled"),
        1,
        S,
        Decision("fail", error="image x is not available locally and could not be pulled"),
    ),
    "temporary, first attempt: retry after 0.5 s": (
        Outcome("temporary", "engine down"),
        1,
        S,
        Decision("retry", 0.5 * S, "engine down"),
    ),
    "temporary, third attempt: retry after 2 s": (
        Outcome("temporary", "engine down"),
        3,
        S,
        Decision("retry", 2 * S, "engine down"),
    ),
    "temporary, last attempt: fail with the count": (
        Outcome("temporary", "engine down"),
        M,
        S,
        Decision("fail", error="gave up after 5 attempts: engine down"),
    ),
    "unexpected is temporary: retry": (
        Outcome("unexpected", "KeyError: 'x'"),
        2,
        S,
        Decision("retry", 1 * S, "KeyError: 'x'"),
    ),
    "unexpected, last attempt: fail": (
        Outcome("unexpected", "KeyError: 'x'"),
        M,
        S,
        Decision("fail", error="gave up after 5 attempts: KeyError: 'x'"),
    ),
    "temporary waited long: the wait limit is for waits only": (
        Outcome("temporary", "engine down"),
        1,
        WAIT_LIMIT * 2,
        Decision("retry", 0.5 * S, "engine down"),
    ),
    "a temporary error with its own delay retries after it (a webhook's schedule)": (
        Outcome("temporary", "answered HTTP 500", 120.0),
        2,
        S,
        Decision("retry", 120 * S, "answered HTTP 500"),
    ),
    "... and still fails after the last attempt": (
        Outcome("temporary", "answered HTTP 500", 120.0),
        M,
        S,
        Decision("fail", error=f"gave up after {M} attempts: answered HTTP 500"),
    ),
}


@pytest.mark.parametrize(("outcome", "attempt", "waited", "expected"), CASES.values(), ids=CASES.keys())
def test_decide(outcome: Outcome, attempt: int, waited: timedelta, expected: Decision) -> None:
    assert decide(outcome, attempt=attempt, max_attempts=M, waited=waited) == expected


def test_backoff_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 10, 50)] == [0.5, 1, 2, 4, 30, 30]


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (NotLeader("lost"), Outcome("not_leader", "lost")),
        (Wait("not healthy yet", 1.5), Outcome("wait", "not healthy yet", 1.5)),
        (Wait("default delay"), Outcome("wait", "default delay", 0.5)),
        (PermanentError("bad spec"), Outcome("permanent", "bad spec")),
        (TemporaryError("engine down"), Outcome("temporary", "engine down")),
        (TemporaryError("HTTP 500", seconds=5.0), Outcome("temporary", "HTTP 500", 5.0)),
        (KeyError("x"), Outcome("unexpected", "KeyError: 'x'")),
        (RuntimeError("boom"), Outcome("unexpected", "RuntimeError: boom")),
    ],
    ids=lambda v: type(v).__name__,
)
def test_classify(exc: Exception, outcome: Outcome) -> None:
    assert classify(exc) == outcome


# -- the runner applies the decision to the job row ----------------------------------------------------------


def run_once(sessions: Any, handler: Callable[[JobContext], Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """Enqueue a `probe-retry` job, claim it as the leader and run it with `handler`; the status and the row."""
    monkeypatch.setitem(registry.HANDLERS, "probe-retry", handler)
    with sessions.begin() as s:
        held = acquire_or_renew(s, "a", 30)
        assert isinstance(held, Held)
        jobq.enqueue(s, "probe-retry", max_attempts=2)
    with sessions.begin() as s:
        claimed = jobq.claim_next(s, node="a", term=held[0])
    assert claimed is not None
    fence = Fence("a", held[0], lambda: time.monotonic() + 60)
    settings = load_settings({"database_url": "sqlite://", "cluster_name": "c"})
    status = run_job(claimed, sessions=sessions, runtime=FakeRuntime(), settings=settings, fence=fence)
    with sessions.begin() as s:
        row = s.scalars(select(jobq.Job).where(jobq.Job.id == claimed.id)).one()
        s.expunge(row)
    return status, row


def raises(exc: Exception) -> Callable[[JobContext], Any]:
    def handler(ctx: JobContext) -> Any:
        raise exc

    return handler


def test_runner_retries_a_temporary_error_after_the_backoff(sessions: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = utcnow()
    status, row = run_once(sessions, raises(TemporaryError("engine down")), monkeypatch)
    assert (status, row.status, row.error, row.attempts) == ("queued", "queued", "engine down", 1)
    assert row.run_after.replace(tzinfo=None) >= (before + backoff(1)).replace(tzinfo=None)


def test_runner_gives_a_waits_attempt_back(sessions: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    status, row = run_once(sessions, raises(Wait("not healthy yet", 2.0)), monkeypatch)
    assert (status, row.status, row.error, row.attempts) == ("queued", "queued", "waiting: not healthy yet", 0)


def test_runner_fails_a_permanent_error(sessions: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    status, row = run_once(sessions, raises(PermanentError("bad spec")), monkeypatch)
    assert (status, row.status, row.error) == ("failed", "failed", "bad spec")


def test_runner_abandons_by_handing_the_job_back(sessions: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    status, row = run_once(sessions, raises(NotLeader("lost")), monkeypatch)
    # back in the queue at once, with why (the next holder of the lease, this node included, runs it again)
    assert (status, row.status, row.error, row.owner) == ("abandoned", "queued", jobq.ABANDONED, None)
    assert row.history[-1]["reason"] == jobq.ABANDONED


def test_runner_records_success(sessions: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    status, row = run_once(sessions, lambda ctx: {"ok": True}, monkeypatch)  # positive control
    assert (status, row.status, row.result) == ("succeeded", "succeeded", {"ok": True})
