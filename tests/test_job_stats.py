"""`/metrics` scrapes count jobs by kind and status with their summed run time (`models.stats.job_stats`).
Job rows are never purged, so the aggregate must be the database's: a scrape at 100,000 finished jobs
fetches one row per kind and status, not a row per job (it once read every finished job into Python).
Real database (SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.base import utcnow
from orchestry.models.jobs import Job
from orchestry.models.stats import job_stats

FINISHED = 100_000


def test_job_stats_at_100k_finished_jobs_fetch_a_row_per_kind_and_status(sessions: sessionmaker[Session]) -> None:
    base = utcnow() - timedelta(days=1)
    kinds, statuses = ("deploy", "scale", "reconcile"), ("succeeded", "failed", "cancelled")
    rows: list[dict[str, Any]] = []
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for i in range(FINISHED):
        kind, status = kinds[i % 3], statuses[(i // 3) % 3]
        started = base + timedelta(seconds=i % 1000)
        seconds = (i % 7) * 0.25 if status != "cancelled" or i % 2 else None  # some never started
        row = {
            "kind": kind,
            "status": status,
            "args": {},
            "steps": [],
            "created_by": "t",
            "attempts": 1,
            "max_attempts": 5,
            "run_after": started,
            "created_at": started,
            "started_at": started if seconds is not None else None,
            "finished_at": started + timedelta(seconds=seconds or 0.0),
        }
        rows.append(row)
        count, total = expected.get((kind, status), (0, 0.0))
        expected[(kind, status)] = (count + 1, total + (seconds or 0.0))
    rows += [
        dict(rows[0], status="running", finished_at=None),
        dict(rows[1], status="queued", started_at=None, finished_at=None),
    ]
    expected[("deploy", "running")] = (1, 0.0)
    expected[("scale", "queued")] = (1, 0.0)
    with sessions.begin() as s:
        s.execute(insert(Job), rows)

    engine: Engine = sessions.kw["bind"]
    with sessions() as s:
        first = {(j.kind, j.status): (j.count, j.seconds) for j in job_stats(s)}  # adds up what has ended
    check(first, expected)

    # Later scrapes read only what changed since: a new job, the running one finished.
    now = utcnow()
    with sessions.begin() as s:
        s.execute(
            insert(Job), [dict(rows[0], status="succeeded", started_at=now, finished_at=now + timedelta(seconds=2))]
        )
        running = s.scalars(select(Job).where(Job.status == "running")).one()
        assert running.started_at is not None
        running.status, running.finished_at = "failed", running.started_at + timedelta(seconds=3)
    expected[("deploy", "running")] = (0, 0.0)
    count, total = expected[("deploy", "failed")]
    expected[("deploy", "failed")] = (count + 1, total + 3.0)
    count, total = expected[("deploy", "succeeded")]
    expected[("deploy", "succeeded")] = (count + 1, total + 2.0)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "after_cursor_execute", capture)
    try:
        with sessions() as s:
            began = time.monotonic()
            stats = job_stats(s)
            took = time.monotonic() - began
    finally:
        event.remove(engine, "after_cursor_execute", capture)
    check({(j.kind, j.status): (j.count, j.seconds) for j in stats}, expected)
    # What the statements fetched: run again here; the jobs of the last minutes and the live ones, no more.
    with engine.connect() as conn:
        fetched = sum(len(conn.exec_driver_sql(sql, params).fetchall()) for sql, params in seen)
    assert fetched <= 5, (fetched, seen)
    print(f"job_stats over {FINISHED:,} finished jobs, a later scrape: {took * 1000:.1f} ms")


def check(got: dict[tuple[str, str], tuple[int, float]], expected: dict[tuple[str, str], tuple[int, float]]) -> None:
    assert {k for k, (c, _) in got.items() if c} == {k for k, (c, _) in expected.items() if c}
    for key, (count, total) in expected.items():
        if count:
            assert got[key][0] == count and got[key][1] == pytest.approx(total, abs=0.01), key
