"""Past the full-resolution period, samples roll up into minute means (real database, SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from test_metrics_collector import T0, add_app, series

from orchestry.controller import metrics as collector_module
from orchestry.controller.metrics import MetricsCollector
from orchestry.jobs.base import Fence, NotLeader
from orchestry.models.metrics import MetricSample, roll_up, window_averages
from orchestry.runtime.stats import UsageReader


def table(sessions: sessionmaker[Session]) -> list[tuple[int, str | None, datetime, float | None, int | None]]:
    with sessions() as s:
        m = MetricSample
        rows = s.execute(select(m.app_id, m.replica_name, m.taken_at, m.cpu_percent, m.samples).order_by(m.id))
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_a_minute_of_samples_rolls_up_into_one_mean_per_app(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        web, other = add_app(s, "web"), add_app(s, "other")
        series(s, web, T0, 31)  # 30 collections in the minute from T0 (app row + 2 replica rows each), 1 after
        series(s, other, T0, 3)
        web_id, other_id = web.id, other.id
    with sessions.begin() as s:
        assert roll_up(s, T0) == 30 * 3 + 3 * 3
    with sessions.begin() as s:
        assert roll_up(s, T0) == 0  # run twice: nothing left to replace, the means untouched
    with sessions() as s:
        rolled = {r.app_id: r for r in s.scalars(select(MetricSample).where(MetricSample.samples.is_not(None)))}
        assert set(rolled) == {web_id, other_id}
        web_row = rolled[web_id]
        assert (web_row.samples, web_row.replica_name, web_row.taken_at) == (30, None, T0 + timedelta(seconds=30))
        assert (web_row.cpu_percent, web_row.rps, web_row.p95_ms, web_row.ready_replicas) == (14.5, 145.0, 100.0, 2)
        assert (rolled[other_id].samples, rolled[other_id].cpu_percent) == (3, 1.0)
        # The next minute's collection is as taken: its app row and both replica rows.
        later = s.scalars(select(MetricSample).where(MetricSample.taken_at >= T0 + timedelta(seconds=60))).all()
        assert sorted((r.replica_name or "", r.samples) for r in later) == [
            ("", None),
            ("web-1", None),
            ("web-2", None),
        ]


def test_window_means_weigh_a_rolled_up_row_by_its_samples(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, T0, 30)  # cpu 0..29 over the first minute: rolled up into 14.5 x 30
        web_id = web.id
    with sessions.begin() as s:
        roll_up(s, T0)
        for i in range(10):  # the next minute as taken: cpu 0..9 (mean 4.5), one row each
            s.add(MetricSample(app_id=web_id, taken_at=T0 + timedelta(seconds=60 + 2 * i), cpu_percent=float(i)))
    with sessions() as s:
        whole = window_averages(s, web_id, T0)[None]
    assert whole.samples == 40
    assert whole.cpu_percent == pytest.approx((14.5 * 30 + 4.5 * 10) / 40)  # 12.0; unweighted it would be 5.4
    assert whole.rps == pytest.approx(145.0)  # only the rolled row has rps: its mean, whatever its weight
    assert whole.first == T0 + timedelta(seconds=30)


def test_the_collector_rolls_up_whole_minutes_past_the_full_resolution_period(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1)).replace(second=0, microsecond=0)
    start = hour_ago - timedelta(hours=2)
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, start, 45)  # 90 s: a whole minute and half of the next
        series(s, web, start + timedelta(minutes=90), 30)  # after a gap of 88 minutes (the controller was down)
        series(s, web, now - timedelta(minutes=10), 5)  # recent: stays as taken
    collector = MetricsCollector(sessions, UsageReader(None), full_resolution_seconds=3600)
    monkeypatch.setattr(collector_module, "MAX_ROLLUPS", 2)  # minutes a pass: a backlog takes several
    first = collector.roll_up(now - timedelta(hours=1))
    assert first == 45 * 3  # two minutes; the gap is skipped by reading where samples are, not minute by minute
    assert collector.roll_up(now - timedelta(hours=1)) == 30 * 3
    assert collector.roll_up(now - timedelta(hours=1)) == 0
    rows = table(sessions)
    rolled = [(at, cpu, samples) for _, name, at, cpu, samples in rows if samples is not None]
    assert rolled == [
        (start + timedelta(seconds=30), 14.5, 30),
        (start + timedelta(seconds=90), 37.0, 15),
        (start + timedelta(minutes=90, seconds=30), 14.5, 30),
    ]
    assert all(name is None for _, name, _, _, samples in rows if samples is not None)
    assert len([r for r in rows if r[4] is None]) == 5 * 3  # the recent collections, as taken


def test_a_collection_rolls_up_what_passed_the_full_resolution_period(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, now - timedelta(hours=2), 60)  # two hours ago: rolled up, its replica rows gone
        series(s, web, now - timedelta(minutes=10), 5)
    collector = MetricsCollector(sessions, UsageReader(None), full_resolution_seconds=3600)
    done = collector.collect()
    assert done.purged == 60 * 3
    with sessions() as s:
        m = MetricSample
        old = now - timedelta(hours=1)
        assert s.scalar(select(func.count()).where(m.taken_at < old, m.samples.is_(None))) == 0
        assert s.scalar(select(func.sum(m.samples)).where(m.taken_at < old)) == 60
        assert s.scalar(select(func.count()).where(m.taken_at >= old)) == 5 * 3 + 1  # and this collection's app row


def test_a_collection_whose_fence_ran_out_writes_nothing(sessions: sessionmaker[Session]) -> None:
    """A leader paused past its lease in the middle of a collection (the chaos test's SIGSTOP) wakes up to a
    void fence: no sample, no roll-up, no purge is committed."""
    now = datetime.now(UTC)
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, now - timedelta(hours=2), 30)
        series(s, web, now - timedelta(days=2), 5)
    before = table(sessions)
    deadline = [0.0]  # the lease's end on the monotonic clock: already passed
    collector = MetricsCollector(
        sessions, UsageReader(None), fence=lambda: Fence("node-a", 3, lambda: deadline[0]), full_resolution_seconds=3600
    )
    assert collector.run() is None
    with pytest.raises(NotLeader):
        collector.collect()
    with pytest.raises(NotLeader):
        collector.roll_up(now - timedelta(hours=1), Fence("node-a", 3, lambda: deadline[0]))
    assert table(sessions) == before
    deadline[0] = time.monotonic() + 60  # renewed: the same collector writes again
    done = collector.run()
    assert done is not None and done.purged == 30 * 3 + 5 * 3
