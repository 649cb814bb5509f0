"""The lease decisions, the database-outage answer and the chaos audit, as tables (no cluster needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cluster_harness import (
    Term,
    actions_outside_term,
    jobs_run_twice_with_effect,
    overlapping_terms,
    percentile,
    terms,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestry.web.errors import database_outage
from orchestry.workflows.lease import fence_deadline, follower_wait, lease_action, margin_seconds

from pg_server import free_port

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("holder", "expires", "row_term", "my_term", "now", "action"),
    [
        (None, None, 0, None, 0, "take"),  # never held
        (None, at(5), 3, None, 0, "take"),  # released (holder cleared) before its expiry
        ("a", at(5), 3, 3, 0, "renew"),  # ours, live, and we lead in that term
        ("a", at(5), 3, 3, 4.999, "renew"),
        ("a", at(5), 3, 3, 5, "take"),  # ours but lapsed: a new term, never a renewal
        ("a", at(5), 3, 3, 9, "take"),
        ("a", at(5), 3, None, 0, "take"),  # ours, live, but we stepped down (or restarted): a new term
        ("a", at(5), 4, 3, 0, "wait"),  # ours by name in another term: a second process with our node id
        ("b", at(5), 3, None, 0, "wait"),  # another's and live
        ("b", at(5), 3, 3, 4.999, "wait"),  # another's, even if we believed the term ours
        ("b", at(5), 3, None, 5, "take"),  # another's and lapsed
        ("b", None, 3, None, 0, "take"),  # a holder without expiry is no lease
    ],
)
def test_lease_action(
    holder: str | None, expires: datetime | None, row_term: int, my_term: int | None, now: float, action: str
) -> None:
    assert lease_action(holder, expires, row_term, "a", my_term, at(now)) == action


@pytest.mark.parametrize(
    ("lease", "margin", "deadline_after_renewal"),
    [(2.5, 0.5, 2.0), (4.0, 0.8, 3.2), (10.0, 1.0, 9.0), (1.0, 0.2, 0.8)],
)
def test_fence_ends_a_margin_before_the_lease(lease: float, margin: float, deadline_after_renewal: float) -> None:
    assert margin_seconds(lease) == pytest.approx(margin)
    assert fence_deadline(100.0, lease) == pytest.approx(100.0 + deadline_after_renewal)


@pytest.mark.parametrize(
    ("expires_in", "renew", "wait"),
    [
        (None, 0.5, 0.5),  # nobody holds it: try at the renew pace
        (2.0, 0.5, 0.5),  # a live lease far off: still look every renew interval (a release ends it early)
        (0.3, 0.5, 0.3),  # about to lapse: wake right at its expiry
        (0.01, 0.5, 0.05),  # never spin
        (-1.0, 0.5, 0.05),  # lapsed already
        (0.7, 1.0, 0.7),
    ],
)
def test_follower_wakes_at_the_expiry(expires_in: float | None, renew: float, wait: float) -> None:
    expires = None if expires_in is None else at(expires_in)
    assert follower_wait(T0, expires, renew) == pytest.approx(wait)


class _Orig(Exception):
    pass


def _invalidated() -> DBAPIError:
    err = DBAPIError("SELECT 1", {}, _Orig("server closed the connection unexpectedly"))
    err.connection_invalidated = True
    return err


@pytest.mark.parametrize(
    ("exc", "outage"),
    [
        (OperationalError("SELECT 1", {}, _Orig("connection refused")), True),
        (InterfaceError("SELECT 1", {}, _Orig("connection already closed")), True),
        (PoolTimeout("QueuePool limit reached"), True),
        (_invalidated(), True),
        (DBAPIError("SELECT 1", {}, _Orig("odd")), False),
        (IntegrityError("INSERT", {}, _Orig("duplicate key")), False),  # a bug or a race, not an outage
        (ProgrammingError("SELECT", {}, _Orig("syntax error")), False),
        (ValueError("bad"), False),
    ],
)
def test_database_outage_is_told_apart(exc: BaseException, outage: bool) -> None:
    assert database_outage(exc) is outage


def test_writes_and_reads_answer_503_when_the_database_cannot_be_reached() -> None:
    """A real connection refused (a PostgreSQL URL on a port nobody listens on): JSON, never a 500."""
    from orchestry.config import load_settings
    from orchestry.models.db import make_engine
    from orchestry.web.app import create_app

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/orchestry"
    app = create_app(load_settings({"database_url": url, "node_id": "n1"}), make_engine(url))
    client = app.test_client()
    spec = "apiVersion: v1\nkind: App\nmetadata: {name: x}\nspec: {image: busybox}\n"
    for resp in (
        client.post("/api/v1/apps", data=spec, content_type="application/yaml"),
        client.post("/api/v1/apps/x/scale", json={"replicas": 2}),
        client.get("/api/v1/apps"),
        client.get("/api/v1/cluster/status"),
    ):
        assert resp.status_code == 503, resp.get_data(as_text=True)
        body = resp.get_json()
        assert body["error"] == "database_unavailable"
        assert "database cannot be reached" in body["detail"]
        assert resp.headers["Retry-After"]
        assert resp.headers["X-Orchestry-Node"] == "n1"


# -- the audit of a chaos run --------------------------------------------------------------------------------------


def rec(msg: str, node: str, term: int, **fields: Any) -> dict[str, Any]:
    return {"msg": msg, "node": node, "term": term, **fields}


def elected(node: str, term: int, start: float) -> dict[str, Any]:
    return rec("elected leader", node, term, acquired_at=datetime.fromtimestamp(start, UTC).isoformat())


def action(node: str, term: int, began: float, job: int = 1, target: str = "c-app-1") -> dict[str, Any]:
    return rec("runtime action", node, term, began=began, job_id=job, action="start", target=target)


LOG = [
    elected("a", 1, 100.0),
    action("a", 1, 101.0),
    rec("stepped down", "a", 1, fence_ended=103.0),  # paused, woke up later, logged its fence's end
    elected("b", 2, 104.0),
    action("b", 2, 105.0),
    elected("c", 3, 110.0),  # b was killed at 107.5 (an end the bench knows)
]


def test_terms_from_the_logs() -> None:
    found = terms(LOG, ends={("b", 2): 107.5})
    assert found == {
        1: Term("a", 1, 100.0, 103.0),
        2: Term("b", 2, 104.0, 107.5),
        3: Term("c", 3, 110.0, None),
    }
    assert overlapping_terms(found) == []


@pytest.mark.parametrize(
    ("act", "outside"),
    [
        (action("a", 1, 102.9), False),
        (action("a", 1, 103.5), True),  # after its own fence ended
        (action("a", 1, 104.5), True),  # after the next term began
        (action("b", 2, 109.0), True),  # after the bench killed it (cannot happen; the audit still counts it)
        (action("b", 2, 99.0), True),  # before its term began
        (action("c", 2, 105.0), True),  # a node acting under a term it never held
        (action("c", 9, 111.0), True),  # a term nobody was elected to
        (action("c", 3, 111.0), False),
    ],
)
def test_actions_outside_their_term(act: dict[str, Any], outside: bool) -> None:
    found = terms(LOG, ends={("b", 2): 107.5})
    assert (actions_outside_term([act], found) == [act]) is outside


def test_overlap_when_a_fence_outlives_the_next_term() -> None:
    found = terms([elected("a", 1, 100.0), rec("stepped down", "a", 1, fence_ended=104.2), elected("b", 2, 104.0)])
    assert overlapping_terms(found) == [(1, 2)]


def test_jobs_run_twice_with_effect() -> None:
    def done(job: int, term: int, target: str, container: str) -> dict[str, Any]:
        return rec("runtime action done", "x", term, job_id=job, action="start", target=target, container=container)

    def stop(job: int, term: int, target: str) -> dict[str, Any]:
        return rec("runtime action done", "x", term, job_id=job, action="stop", target=target)

    log = [
        done(1, 1, "app-1", "aaa"),
        done(1, 2, "app-1", "aaa"),  # the retry adopted the first run's container: no effect
        done(2, 1, "app-1", "bbb"),
        done(2, 2, "app-1", "ccc"),  # the retry made a second container
        done(3, 2, "app-2", "ddd"),
        done(4, 2, "app-3", "eee"),
        stop(4, 2, "app-3"),  # the count went down while job 4 ran ...
        done(4, 3, "app-3", "fff"),  # ... and up again: a new container by right, after a failover
        done(5, 3, "app-4", "ggg"),
        stop(6, 3, "app-4"),  # stopped by another job (a scale-in), then job 5 resumes in a new term
        done(5, 4, "app-4", "hhh"),
        done(7, 4, "app-5", "iii"),
        done(7, 4, "app-5", "jjj"),  # the same term: not a retry across terms
    ]
    assert jobs_run_twice_with_effect(log) == [2]


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([3.0, 1.0, 2.0], 50, 2.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0), ([1.0, 2.0, 3.0, 4.0], 100, 4.0), ([5.0], 50, 5.0)],
)
def test_percentile(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == expected
