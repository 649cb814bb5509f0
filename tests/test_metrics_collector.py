"""The metrics collector writing samples (real containers, real database), retention, and the window queries."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import docker
import docker.errors
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from test_idle_cost import statements

from orchestry.controller.metrics import MetricsCollector
from orchestry.models.apps import App
from orchestry.models.metrics import (
    MetricSample,
    current,
    latest_app_rows,
    metric_window,
    purge_before,
    samples_since,
    window_averages,
)
from orchestry.models.replicas import Replica
from orchestry.runtime.docker_engine import DockerEngine
from orchestry.runtime.stats import ContainerFacts, UsageReader
from orchestry.runtime.types import LABEL_CLUSTER, EngineUnavailable, Observed, ReplicaRequest
from orchestry.testapp.build import TAG
from orchestry.testapp.build import ensure_image as build_testapp
from orchestry.workflows.metrics import Usage
from orchestry.workflows.scaling import ReplicaSample


@dataclass(frozen=True)
class Seen:
    """A fake of the lead's nginx traffic figures for one app (unit tests only)."""

    rps: float
    p95_ms: float | None
    active_connections: int
    error_rate: float
    replicas: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def containers(docker_required: object) -> Iterator[list[Observed]]:
    """Two running test-app replicas (one limited to 100m / 64Mi), removed after the module."""
    build_testapp()
    engine = DockerEngine()
    cluster = f"t{uuid.uuid4().hex[:8]}"
    try:
        yield [
            engine.start_replica(
                ReplicaRequest(
                    cluster=cluster,
                    app="c",
                    slot=slot,
                    revision=1,
                    spec_hash="h",
                    image=TAG,
                    container_port=8080,
                    **limits,  # type: ignore[arg-type]
                )
            )
            for slot, limits in ((1, {"nano_cpus": 100_000_000, "memory_bytes": 64 << 20}), (2, {}))
        ]
    finally:
        for c in docker.from_env().containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        engine.close()


def add_app(session: Session, name: str, status: str = "running") -> App:
    app = App(name=name, status=status, desired_replicas=2)
    session.add(app)
    session.flush()
    return app


def add_replica(
    session: Session, app: App, slot: int, container_id: str, port: int | None, *, health: str = "healthy"
) -> Replica:
    replica = Replica(
        app_id=app.id,
        revision=1,
        slot=slot,
        name=f"{app.name}-{slot}",
        container_id=container_id,
        host="127.0.0.1",
        port=port,
        state="running",
        health=health,
    )
    session.add(replica)
    return replica


def rows(sessions: sessionmaker[Session]) -> list[MetricSample]:
    with sessions() as s:
        return list(s.scalars(select(MetricSample).order_by(MetricSample.taken_at, MetricSample.replica_name)))


def test_collect_writes_a_row_per_replica_and_per_app(
    sessions: sessionmaker[Session], containers: list[Observed]
) -> None:
    one, two = containers
    with sessions.begin() as s:
        web = add_app(s, "web")
        add_replica(s, web, 1, one.id, one.port)
        add_replica(s, web, 2, two.id, two.port)
        add_app(s, "parked", status="stopped")
    traffic = {"web": Seen(12.5, 40.0, 3, 0.02, {f"127.0.0.1:{one.port}": 10.0, f"127.0.0.1:{two.port}": 2.5})}
    collector = MetricsCollector(sessions, UsageReader(DockerEngine()), traffic=lambda: traffic)

    first = collector.collect()
    assert (first.apps, first.replicas, first.unread, first.traffic) == (1, 2, 0, True)
    by_name = {r.replica_name: r for r in rows(sessions)}
    assert set(by_name) == {None, "web-1", "web-2"}
    assert by_name["web-1"].cpu_percent is None  # CPU needs two readings: no figure is not a zero
    assert by_name["web-1"].memory_percent is not None and by_name["web-1"].memory_percent > 0
    app_row = by_name[None]
    assert (app_row.rps, app_row.p95_ms, app_row.active_connections, app_row.error_rate) == (12.5, 40.0, 3, 0.02)
    assert app_row.ready_replicas == 2 and app_row.cpu_percent is None
    assert (by_name["web-1"].rps, by_name["web-2"].rps) == (10.0, 2.5)

    time.sleep(1.0)
    second = collector.collect()
    latest = [r for r in rows(sessions) if r.taken_at == second.taken_at]
    assert len(latest) == 3 and len({r.taken_at for r in latest}) == 1  # one snapshot, one time
    cpu = {r.replica_name: r.cpu_percent for r in latest}
    assert cpu["web-1"] is not None and cpu["web-2"] is not None
    assert cpu[None] == pytest.approx((cpu["web-1"] + cpu["web-2"]) / 2)


def test_only_ready_replicas_make_the_app_means_and_unreadable_ones_get_no_row(
    sessions: sessionmaker[Session], containers: list[Observed]
) -> None:
    one, two = containers
    with sessions.begin() as s:
        web = add_app(s, "web")
        add_replica(s, web, 1, one.id, one.port)
        add_replica(s, web, 2, two.id, two.port, health="unhealthy")
        add_replica(s, web, 3, "0" * 64, None)  # its container is gone: nothing to read
    collector = MetricsCollector(sessions, UsageReader(DockerEngine()))
    collector.collect()
    time.sleep(0.5)
    done = collector.collect()
    assert (done.replicas, done.unread, done.traffic) == (2, 1, False)
    latest = {r.replica_name: r for r in rows(sessions) if r.taken_at == done.taken_at}
    assert set(latest) == {None, "web-1", "web-2"}
    assert latest[None].ready_replicas == 2  # web-1 and the unreadable web-3 are in rotation
    assert latest[None].memory_percent == pytest.approx(latest["web-1"].memory_percent)
    assert latest[None].rps is None and latest["web-1"].rps is None  # no traffic source: unknown, not zero


class EngineDown:
    def container_facts(self, container_id: str) -> ContainerFacts:
        raise EngineUnavailable("Docker engine unreachable")

    def container_usage(self, container_id: str) -> Usage:
        raise EngineUnavailable("Docker engine unreachable")


def test_nothing_readable_records_no_false_zeros(sessions: sessionmaker[Session], tmp_path: object) -> None:
    with sessions.begin() as s:
        web = add_app(s, "web")
        add_replica(s, web, 1, "a" * 64, 1)
        add_replica(s, web, 2, "b" * 64, 2)
    collector = MetricsCollector(sessions, UsageReader(EngineDown()), traffic=lambda: {})
    done = collector.collect()
    assert (done.replicas, done.unread) == (0, 2)
    (app_row,) = rows(sessions)
    assert app_row.replica_name is None
    assert app_row.cpu_percent is None and app_row.memory_percent is None
    assert app_row.ready_replicas == 2
    assert app_row.rps is None  # the traffic source named no app (its first reading): unknown, not zero


def test_a_failing_traffic_source_leaves_traffic_unknown(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        add_app(s, "web")

    def broken() -> dict[str, Seen]:
        raise OSError("nginx control port refused")

    done = MetricsCollector(sessions, UsageReader(None), traffic=broken).run()
    assert done is not None and done.traffic is False
    (app_row,) = rows(sessions)
    assert (app_row.rps, app_row.p95_ms, app_row.ready_replicas) == (None, None, 0)


def test_nginx_traffic_meter_plugs_in(sessions: sessionmaker[Session]) -> None:
    """The lead's TrafficMeter as the source: its first reading has no rates (unknown), the next one has."""
    from orchestry.nginx.traffic import TrafficMeter

    with sessions.begin() as s:
        add_app(s, "web")
    readings = iter(
        [
            {"started": 1.0, "bounds": [10, 100], "apps": {"web": {"requests": 100, "errors": 0, "active": 1}}},
            {
                "started": 1.0,
                "bounds": [10, 100],
                "apps": {"web": {"requests": 300, "errors": 20, "active": 2, "buckets": [0, 200, 0]}},
            },
        ]
    )
    clock = iter([0.0, 2.0])

    class Counters:
        def traffic_counters(self) -> dict[str, object]:
            return next(readings)

    collector = MetricsCollector(
        sessions, UsageReader(None), traffic=TrafficMeter(Counters(), clock=lambda: next(clock))
    )
    collector.collect()
    collector.collect()
    first, second = rows(sessions)
    assert (first.rps, first.error_rate, first.active_connections) == (None, None, None)
    assert (second.rps, second.error_rate, second.active_connections) == (100.0, 0.1, 2.0)
    assert second.p95_ms is not None and 10 < second.p95_ms <= 100


# -- retention and queries, on synthetic samples ----------------------------------------------------------------

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def series(session: Session, app: App, start: datetime, count: int, step: float = 2.0) -> None:
    """`count` collections: an app row and two replica rows each, with values that grow by one per step."""
    for i in range(count):
        at = start + timedelta(seconds=step * i)
        session.add(
            MetricSample(
                app_id=app.id,
                taken_at=at,
                cpu_percent=float(i),
                memory_percent=10.0,
                rps=float(10 * i),
                p95_ms=100.0,
                active_connections=4.0,
                error_rate=0.0,
                ready_replicas=2,
            )
        )
        for slot in (1, 2):
            session.add(
                MetricSample(
                    app_id=app.id,
                    replica_name=f"{app.name}-{slot}",
                    taken_at=at,
                    cpu_percent=float(i * slot),
                    memory_percent=float(slot),
                    rps=float(5 * i),
                )
            )


def test_retention_deletes_old_samples_in_bounded_batches(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, T0 - timedelta(days=2), 100)  # 300 old rows
        series(s, web, T0, 5)  # 15 recent ones
    with sessions.begin() as s:
        assert purge_before(s, T0 - timedelta(days=1), batch=120) == 120
    collector = MetricsCollector(sessions, UsageReader(None), retention_seconds=86_400)
    assert collector.purge(T0 - timedelta(days=1)) == 180
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricSample)) == 15
        assert s.scalar(select(func.min(MetricSample.taken_at))) == T0


def test_collect_applies_the_retention(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        web = add_app(s, "web")
        series(s, web, datetime.now(UTC) - timedelta(hours=3), 10)
        series(s, web, datetime.now(UTC) - timedelta(minutes=10), 10)
    collector = MetricsCollector(sessions, UsageReader(None), retention_seconds=3600)
    done = collector.collect()
    assert done.purged == 30
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(MetricSample)) == 31
    # Once a minute, not at every collection (each pass is a write transaction): a sample now too old stays.
    with sessions.begin() as s:
        series(s, web, datetime.now(UTC) - timedelta(hours=3), 1)
    engine = sessions.kw["bind"]
    with statements(engine) as seen:
        assert collector.collect().purged == 0
    assert not [s for s in seen if s.startswith("DELETE")], seen


def test_window_queries(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        web, other = add_app(s, "web"), add_app(s, "other")
        series(s, web, T0, 31)  # 60 s of samples every 2 s
        series(s, other, T0, 3)
        web_id, other_id = web.id, other.id
    with sessions() as s:
        since = T0 + timedelta(seconds=40)  # the last 11 collections: i = 20..30
        got = samples_since(s, web_id, since)
        assert len(got) == 33 and all(r.app_id == web_id and r.taken_at >= since for r in got)
        assert [r.cpu_percent for r in samples_since(s, web_id, since, app_rows_only=True, limit=3)] == [20, 21, 22]
        newest = samples_since(s, web_id, since, app_rows_only=True, limit=2, newest_first=True)
        assert [r.cpu_percent for r in newest] == [30, 29]

        means = window_averages(s, web_id, since)
        assert set(means) == {None, "web-1", "web-2"}
        assert means[None].cpu_percent == pytest.approx(25.0) and means[None].samples == 11
        assert means[None].span_seconds == 20.0
        assert means["web-2"].cpu_percent == pytest.approx(50.0)

        window = metric_window(s, web_id, since, replicas=["web-1"])
        assert window.span_seconds == 20.0
        assert window.rps == pytest.approx(250.0) and window.p95_ms == 100.0 and window.active_connections == 4.0
        expected = ReplicaSample(cpu_percent=25.0, memory_percent=1.0, rps=125.0, p95_ms=None, active_connections=None)
        assert window.replicas == {"web-1": expected}
        assert metric_window(s, web_id, T0 + timedelta(hours=1)).span_seconds == 0.0

        app_row, replica_rows = current(s, web_id, T0)
        assert app_row is not None and app_row.cpu_percent == 30.0
        assert [(r.replica_name, r.cpu_percent) for r in replica_rows] == [("web-1", 30.0), ("web-2", 60.0)]
        assert current(s, web_id, T0 + timedelta(hours=1)) == (None, [])

        latest = latest_app_rows(s, T0)
        assert {k: v.cpu_percent for k, v in latest.items()} == {web_id: 30.0, other_id: 2.0}
