"""Replica rows mirror the engine, and keep the most precise start time any observation gave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_jobs_converge import submit

from orchestry.models.apps import get_app
from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.models.replicas import latest, replicas_of, sync_observed

PRECISE = datetime(2026, 11, 27, 12, 0, 7, 912_000, tzinfo=UTC)  # inspect: StartedAt
LISTED = datetime(2026, 11, 27, 12, 0, 7, tzinfo=UTC)  # list: Created, whole seconds


@pytest.mark.parametrize(
    ("known", "observed", "expected"),
    [
        (None, None, None),
        (None, LISTED, LISTED),  # a new row takes what it is given
        (PRECISE, None, PRECISE),  # an observation without a time keeps the known one
        (PRECISE, LISTED, PRECISE),  # the list's truncated time never replaces the inspected one
        (LISTED, PRECISE, PRECISE),  # adopted from the list first, inspected later
        (PRECISE.replace(tzinfo=None), LISTED, PRECISE),  # SQLite hands naive UTC back
        (LISTED, "2026-11-27", LISTED),  # not a time: ignored
    ],
)
def test_latest_start_time(known: datetime | None, observed: Any, expected: datetime | None) -> None:
    assert latest(known, observed) == expected


def observed(container: str, started_at: datetime) -> dict[str, object]:
    return {
        "name": "c-web-1",
        "slot": 1,
        "revision": 1,
        "container_id": container,
        "host": "127.0.0.1",
        "port": 40001,
        "state": "running",
        "started_at": started_at,
        "ports": {},
    }


def test_a_later_listing_keeps_the_inspected_start_and_a_new_container_replaces_it(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    submit(sessions, "blue")

    def sync(container: str, started_at: datetime) -> datetime | None:
        with sessions.begin() as s:
            app = get_app(s, "web")
            assert app is not None
            sync_observed(s, app.id, [observed(container, started_at)])
        with sessions() as s:
            app = get_app(s, "web")
            assert app is not None
            (row,) = replicas_of(s, app.id)
            return row.started_at.replace(tzinfo=UTC) if row.started_at else None

    try:
        assert sync("aaa", PRECISE) == PRECISE  # what start_replica recorded from its inspect
        assert sync("aaa", LISTED) == PRECISE  # the reconcile's listing of the same container
        later = LISTED + timedelta(seconds=30)
        assert sync("bbb", later) == later  # a replacement under the same name starts afresh
    finally:
        engine.dispose()


def test_a_replicas_swarm_host_follows_what_the_engine_reports(db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    submit(sessions, "blue")

    def sync(host_name: str | None) -> str | None:
        with sessions.begin() as s:
            app = get_app(s, "web")
            assert app is not None
            sync_observed(s, app.id, [{**observed("aaa", PRECISE), "host_name": host_name}])
        with sessions() as s:
            app = get_app(s, "web")
            assert app is not None
            (row,) = replicas_of(s, app.id)
            return row.host_name

    try:
        assert sync("worker-1") == "worker-1"
        assert sync("worker-2") == "worker-2"  # Swarm moved the task
        assert sync(None) is None  # the docker runtime names none
    finally:
        engine.dispose()
