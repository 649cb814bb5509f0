"""The `metrics-collect` periodic job: one sample per running replica and one per running app, on the leader.

Observe → compute → write: the replica rows and their containers come from the database, the counters from
the cgroup reader (Docker's stats API for what it cannot read), traffic figures from nginx through an
optional callable, and the percentages from `workflows.metrics`. Every row of one collection carries the
same `taken_at` (the database's clock), so a collection is one consistent snapshot.

Nothing false is written: a replica whose counters could not be read gets no row, a replica read for the
first time has no CPU figure yet (CPU needs two readings), and an app row's means cover only the ready
replicas that were read. Once a minute the retention pass rolls the samples past the full-resolution period
up into minute means (a minute per transaction, a bounded number per pass) and deletes the samples past the
retention in bounded batches, each in its own short transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Fence, NotLeader
from orchestry.models.apps import running_apps
from orchestry.models.cluster import db_now
from orchestry.models.db import reads_of
from orchestry.models.metrics import (
    PURGE_BATCH,
    ROLLUP_SECONDS,
    add_latencies,
    add_samples,
    oldest_unrolled,
    purge_before,
    roll_up,
)
from orchestry.models.replicas import address_of, running_replica_columns
from orchestry.runtime.stats import UsageReader, UsageSource
from orchestry.runtime.types import RuntimeFailure
from orchestry.workflows.metrics import FIGURES, Usage, cpu_percent, mean, memory_percent

log = logging.getLogger("orchestry.controller.metrics")

# Every row of one INSERT names the same columns (an executemany needs one shape): the figures a row lacks
# are NULL, as an ORM object's unset attributes were.
SAMPLE: dict[str, Any] = dict.fromkeys(FIGURES)
MAX_PURGE_BATCHES = 10  # per collection: a backlog is worked off over several runs, never in one long stall
MAX_ROLLUPS = 30  # minutes rolled up per pass: a backlog (an upgrade, a long outage) is worked off over passes
PURGE_SECONDS = 60.0  # the retention is applied once a minute (and at every run while a backlog remains)


class AppTraffic(Protocol):
    """What nginx saw for one app since the previous call (the lead's nginx counters provide it)."""

    @property
    def rps(self) -> float: ...
    @property
    def p95_ms(self) -> float | None: ...
    @property
    def active_connections(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def replicas(self) -> Mapping[str, float]:
        """Requests per second by upstream address (`127.0.0.1:<port>`)."""
        ...


TrafficSource = Callable[[], Mapping[str, AppTraffic]]  # app name -> its traffic (nginx.traffic.TrafficMeter)


@dataclass(frozen=True)
class Target:
    app_id: int
    app: str
    replica: str
    container_id: str
    address: str | None
    ready: bool


@dataclass(frozen=True)
class Collection:
    """What one run did (logged, and read by tests and the benchmark)."""

    taken_at: datetime
    apps: int
    replicas: int  # replica rows written
    unread: int  # running replicas whose counters could not be read (no row)
    from_cgroup: int
    from_engine: int
    read_seconds: float
    purged: int
    traffic: bool  # the traffic source answered (it may still have had no figures yet)


@dataclass
class MetricsCollector:
    sessions: sessionmaker[Session]
    reader: UsageReader
    retention_seconds: float = 86_400.0
    full_resolution_seconds: float = 3_600.0
    traffic: TrafficSource | None = None
    # The leader's fence, taken at the start of a collection and checked before each commit: a leader paused
    # past its lease (SIGSTOP, a frozen VM) in the middle of a collection writes nothing when it wakes up.
    fence: Callable[[], Fence] | None = None
    _previous: dict[str, Usage] = field(default_factory=dict, init=False)  # container id -> last reading
    _unread: int = field(default=0, init=False)
    _purge_due: float = field(default=0.0, init=False)  # time.monotonic() of the next retention pass
    _rolled_to: datetime | None = field(default=None, init=False)  # samples before it are rolled up (or gone)

    @classmethod
    def for_runtime(
        cls,
        sessions: sessionmaker[Session],
        runtime: object,
        retention_seconds: float,
        full_resolution_seconds: float,
        fence: Callable[[], Fence] | None = None,
    ) -> MetricsCollector:
        """A collector reading cgroup files, with the runtime's stats API as fallback when it has one."""
        engine = runtime if isinstance(runtime, UsageSource) else None
        return cls(
            sessions,
            UsageReader(engine),
            retention_seconds=retention_seconds,
            full_resolution_seconds=full_resolution_seconds,
            fence=fence,
        )

    def run(self) -> Collection | None:
        """The periodic job: collect, or log and skip this sample when the database or the engine fails."""
        try:
            collection = self.collect()
        except NotLeader as exc:  # the lease ended during the collection: nothing was written
            log.info("metrics collection dropped", extra={"error": str(exc)})
            return None
        except (SQLAlchemyError, RuntimeFailure, OSError) as exc:
            log.warning("metrics collection skipped", extra={"error": str(exc)})
            return None
        log.debug(
            "metrics collected",
            extra={"replicas": collection.replicas, "apps": collection.apps, "read_seconds": collection.read_seconds},
        )
        return collection

    def close(self) -> None:
        self.reader.close()

    def collect(self) -> Collection:
        """One collection and one retention pass. Database errors and a fence found void (NotLeader)
        propagate (`run` logs and skips them)."""
        fence = self.fence() if self.fence is not None else None
        apps, targets = self._targets()
        started = time.monotonic()
        result = self.reader.read([t.container_id for t in targets])
        read_seconds = time.monotonic() - started
        host = self.reader.host_memory()
        traffic = self._traffic()

        figures: dict[str, tuple[float | None, float | None]] = {}
        for t in targets:
            usage = result.usage.get(t.container_id)
            if usage is None:
                continue
            figures[t.replica] = (cpu_percent(self._previous.get(t.container_id), usage), memory_percent(usage, host))
        self._previous = {cid: u for cid, u in result.usage.items()}  # stopped containers fall out here

        with self.sessions.begin() as session:
            now = db_now(session)
            rows = [
                *self._replica_rows(targets, figures, traffic, now),
                *self._app_rows(apps, targets, figures, traffic, now),
            ]
            add_samples(session, rows)  # one INSERT of every row (an executemany), not an ORM object per row
            for app_id, name in apps.items():
                # Optional in a source: the interval's latency histogram (nginx.traffic.AppTraffic has it).
                seen = traffic.get(name) if traffic is not None else None
                counts = tuple(getattr(seen, "histogram", ()))
                if sum(counts):
                    bounds = tuple(getattr(seen, "bounds", ()))
                    add_latencies(session, app_id, bounds, counts, float(getattr(seen, "latency_ms", 0.0)))
            _check(fence)  # right before the commit: past it, the transaction rolls back
        purged = 0
        if time.monotonic() >= self._purge_due:  # not every few seconds: a write transaction each time
            purged = self.purge(now - timedelta(seconds=self.retention_seconds), fence)
            purged += self.roll_up(now - timedelta(seconds=self.full_resolution_seconds), fence)
        collection = Collection(
            taken_at=now,
            apps=len(apps),
            replicas=len(figures),
            unread=len(targets) - len(figures),
            from_cgroup=result.from_cgroup,
            from_engine=result.from_engine,
            read_seconds=read_seconds,
            purged=purged,
            traffic=traffic is not None,
        )
        if collection.unread != self._unread:  # once per change, not every few seconds
            level = logging.WARNING if collection.unread else logging.INFO
            log.log(level, "metrics: replicas unread", extra={"unread": collection.unread, "replicas": len(targets)})
            self._unread = collection.unread
        return collection

    def purge(self, before: datetime, fence: Fence | None = None) -> int:
        """Samples older than `before`, in bounded batches; due again in PURGE_SECONDS, or at the next run
        while a backlog remains."""
        total = 0
        for _ in range(MAX_PURGE_BATCHES):
            with self.sessions.begin() as session:
                gone = purge_before(session, before)
                _check(fence)
            total += gone
            if gone < PURGE_BATCH:
                self._purge_due = time.monotonic() + PURGE_SECONDS
                break
        return total

    def roll_up(self, before: datetime, fence: Fence | None = None) -> int:
        """The samples as taken before `before`, a whole minute at a time, into minute means (models.metrics.
        roll_up), oldest first; at most MAX_ROLLUPS minutes a pass. Returns how many rows went.

        Where to start is read once (a range scan from the oldest sample) and then kept: collections are
        taken at the database's clock, so none lands behind a minute already rolled up. An empty minute (the
        controller was down) is skipped by reading where the next samples are."""
        total = 0
        start = self._rolled_to
        if start is None:
            with reads_of(self.sessions)() as session:
                start = _minute(oldest_unrolled(session, None, before) or before)
        step = timedelta(seconds=ROLLUP_SECONDS)
        for _ in range(MAX_ROLLUPS):
            if start + step > before:
                break
            with self.sessions.begin() as session:
                gone = roll_up(session, start)
                following = start + step if gone else _minute(oldest_unrolled(session, start, before) or before)
                _check(fence)
            total += gone
            start = following
        self._rolled_to = start
        return total

    # -- observe ---------------------------------------------------------------------------------------------

    def _targets(self) -> tuple[dict[int, str], list[Target]]:
        """Running apps, and their running replicas with a container, as the database knows them."""
        with reads_of(self.sessions)() as session:  # a read: no write lock on SQLite
            apps: dict[int, str] = running_apps(session)
            rows = running_replica_columns(session, apps)
            targets = [
                Target(
                    app_id=app_id,
                    app=apps[app_id],
                    replica=name,
                    container_id=container_id or "",
                    address=address_of(host, port),
                    ready=health == "healthy" and drain_started_at is None,
                )
                for app_id, name, container_id, host, port, health, drain_started_at in rows
            ]
        return apps, targets

    def _traffic(self) -> Mapping[str, AppTraffic] | None:
        if self.traffic is None:
            return None
        try:
            return self.traffic()
        except Exception as exc:  # nginx's counters unreadable: CPU and memory still count, traffic stays unknown
            log.warning("metrics: no traffic figures", extra={"error": str(exc)})
            return None

    # -- rows ------------------------------------------------------------------------------------------------

    @staticmethod
    def _replica_rows(
        targets: list[Target],
        figures: Mapping[str, tuple[float | None, float | None]],
        traffic: Mapping[str, AppTraffic] | None,
        now: datetime,
    ) -> list[dict[str, Any]]:
        rows = []
        for t in targets:
            if t.replica not in figures:
                continue
            cpu, memory = figures[t.replica]
            seen = traffic.get(t.app) if traffic is not None else None
            rps = None
            if seen is not None and t.address is not None and t.ready:  # the app was counted: absent means none
                rps = float(seen.replicas.get(t.address, 0.0))
            rows.append(
                dict(
                    SAMPLE,
                    app_id=t.app_id,
                    replica_name=t.replica,
                    taken_at=now,
                    cpu_percent=cpu,
                    memory_percent=memory,
                    rps=rps,
                )
            )
        return rows

    @staticmethod
    def _app_rows(
        apps: Mapping[int, str],
        targets: list[Target],
        figures: Mapping[str, tuple[float | None, float | None]],
        traffic: Mapping[str, AppTraffic] | None,
        now: datetime,
    ) -> list[dict[str, Any]]:
        ready_of: dict[int, list[Target]] = {app_id: [] for app_id in apps}
        for t in targets:
            if t.ready:
                ready_of[t.app_id].append(t)
        rows = []
        for app_id, name in apps.items():
            ready = ready_of[app_id]
            read = [figures[t.replica] for t in ready if t.replica in figures]
            row = dict(
                SAMPLE,
                app_id=app_id,
                replica_name=None,
                taken_at=now,
                cpu_percent=mean(cpu for cpu, _ in read),
                memory_percent=mean(memory for _, memory in read),
                ready_replicas=len(ready),
            )
            # An app the traffic source does not name has no figures (nginx's first reading, a failed read,
            # an app nginx never counted): unknown, never zero. A named app's zeros are real.
            seen = traffic.get(name) if traffic is not None else None
            if seen is not None:
                row["rps"] = float(seen.rps)
                row["p95_ms"] = float(seen.p95_ms) if seen.p95_ms is not None else None
                row["active_connections"] = float(seen.active_connections)
                row["error_rate"] = float(seen.error_rate)
            rows.append(row)
        return rows


def _check(fence: Fence | None) -> None:
    if fence is not None:
        fence.check()


def _minute(at: datetime) -> datetime:
    """The start of `at`'s minute (roll-ups cover whole minutes, so a rerun covers the same ones)."""
    return at.replace(second=0, microsecond=0)
