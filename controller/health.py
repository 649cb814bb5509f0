"""The health sweep: probe every replica that is due, record verdicts, and act on transitions.

Each replica is checked as its own revision says (during a rollout the old replicas keep their old
check). Which replicas are due and what a result means are pure (`workflows.health`); the probes run concurrently
(`probe.Prober`), so a sweep costs about one timeout, not the sum. A transition is stored on the replica
and written as an event; a change of rotation is pushed to nginx at once; a replica that crossed its
failure threshold makes its app drift, which a `reconcile` job repairs (subject to the replacement backoff).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Router, TemporaryError
from orchestry.models.apps import RevisionMemo
from orchestry.models.base import aware, utcnow
from orchestry.models.changes import watched_writes
from orchestry.models.db import reads_of
from orchestry.models.events import record
from orchestry.models.replicas import health_rows, health_rows_for_update, mark_healthy, write_health
from orchestry.probe import Prober, Target, target_from_spec
from orchestry.workflows.health import (
    CheckPolicy,
    HealthState,
    ProbeResult,
    ReplicaHealth,
    due,
    health_verdict,
    policy_from_spec,
    worth_recording,
)
from orchestry.workflows.hosts import UNREACHABLE, HostHealth, lost_hosts

log = logging.getLogger("orchestry.health")
LOOPBACK = "127.0.0.1"


@dataclass
class SweepReport:
    checked: int = 0
    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (replica, before, after)
    unhealthy_apps: set[str] = field(default_factory=set)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    hosts: list[HostHealth] = field(default_factory=list)  # each probed replica's host and health after the sweep


CACHE_LIMIT = 10_000
# The rows a tick plans from are read again after any write to replicas or apps by this process (the leader's
# jobs, models.changes), and at least this often (a write that count cannot see: another process's).
SNAPSHOT_SECONDS = 5.0


def _stored(row: Any) -> ReplicaHealth:
    """The health a row of models.replicas.HEALTH_COLUMNS holds (columns 5 to 10)."""
    health, successes, failures, last_check_at, last_error, latency = row[5:11]
    state: HealthState = "healthy" if health == "healthy" else "unhealthy" if health == "unhealthy" else "unknown"
    return ReplicaHealth(
        state, successes, failures, aware(last_check_at) if last_check_at else None, last_error, latency
    )


class _Known(NamedTuple):
    """A replica with a check, as the sweep read it."""

    replica_id: int
    policy: CheckPolicy
    app: str
    health: ReplicaHealth  # its row's, or this node's newer (HealthSweep._current)
    host: str | None  # None on the docker runtime: loopback


def _check_of(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, CheckPolicy | None]:
    """A revision's healthCheck and its policy (None: no check)."""
    check = spec.get("healthCheck")
    return check, policy_from_spec(check)


@dataclass(frozen=True)
class _Snapshot:
    """The rows of a full sweep's read, the checks of their revisions, and when they were read."""

    version: int  # models.changes.watched_writes when read (read before the query: a write after it shows)
    read_at: float  # time.monotonic()
    rows: list[Any]
    checks: dict[tuple[int, str], tuple[dict[str, Any] | None, CheckPolicy | None]]


@dataclass(frozen=True)
class _Checked:
    """A replica's health as this node last recorded it (`stored`: what its row says) and as its latest
    check left it (`latest`): a check that changed nothing but its time and latency is kept here, not written."""

    stored: ReplicaHealth
    latest: ReplicaHealth


class HealthSweep:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        prober: Prober,
        router: Router | None,
        on_unhealthy: Callable[[set[str]], None],
        may_write: Callable[[], bool] = lambda: True,
        on_hosts_lost: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.prober = prober
        self.router = router
        self.on_unhealthy = on_unhealthy
        self.may_write = may_write  # the leader's fence: checked once the probes are back, before recording
        self.on_hosts_lost = on_hosts_lost  # the swarm runtime: drain them, before replacements are placed
        self._lock = threading.Lock()
        self._checks = RevisionMemo(_check_of, CACHE_LIMIT)  # each revision's healthCheck and its policy
        self._checked: dict[int, _Checked] = {}  # replica id -> its health, see _Checked
        self._snapshot: _Snapshot | None = None  # the last full read, planned from while nothing changed
        self._written: dict[int, ReplicaHealth] = {}  # the health this sweep wrote since that read, by replica id

    def forget(self) -> None:
        """Read every row again at the next tick (a new term: another leader may have written meanwhile)."""
        with self._lock:
            self._snapshot = None
            self._written.clear()

    def _read(self, app: str | None) -> tuple[list[Any], dict[Any, Any], dict[int, ReplicaHealth]]:
        """The rows to plan from, their revisions' checks, and the health written over them since they were
        read. A full sweep (the tick) reuses its last read while no replica or app was written meanwhile and
        the read is under SNAPSHOT_SECONDS old; one app's (a health-check job) always reads."""
        with self._lock:
            kept = self._snapshot
            if (
                app is None
                and kept is not None
                and kept.version == watched_writes.value
                and time.monotonic() - kept.read_at < SNAPSHOT_SECONDS
            ):
                return kept.rows, kept.checks, dict(self._written)
        version, read_at = watched_writes.value, time.monotonic()
        with reads_of(self.sessions)() as session:  # a read: no write lock on SQLite (probes come after)
            rows = health_rows(session, app)
            checks = self._checks.load(session, [(row[-2], row[-1]) for row in rows])
        if app is None:
            with self._lock:
                self._snapshot = _Snapshot(version, read_at, rows, checks)
                self._written.clear()
        return rows, checks, {}

    def _current(self, replica_id: int, stored: ReplicaHealth) -> ReplicaHealth:
        """The replica's health: its row's, or newer from this node's memory while the row is as this node
        left it (any other writer, or another leader's, makes the row win)."""
        with self._lock:
            seen = self._checked.get(replica_id)
            if seen is None:
                return stored
            if seen.stored != stored:
                del self._checked[replica_id]
                return stored
            return seen.latest

    def run(self, app: str | None = None, force: bool = False) -> SweepReport:
        """Probe what is due (every replica of `app` when forced) and record the verdicts."""
        now = utcnow()
        report = SweepReport()
        targets: list[Target] = []
        failed_early: dict[str, ProbeResult] = {}
        promote: list[int] = []  # replicas of apps without a check: running is healthy
        known: dict[str, _Known] = {}  # the replicas with a check, by name
        rows, checks, written = self._read(app)
        live: set[int] = set()
        for row in rows:
            replica_id, name, ports, started_at, created_at = row[:5]
            live.add(replica_id)
            check, policy = checks[(row[-2], row[-1])]
            stored = written.get(replica_id) or _stored(row)
            if policy is None:
                if stored.state != "healthy":
                    promote.append(replica_id)
                continue
            health = self._current(replica_id, stored)
            host = row[11]  # None on the docker runtime: loopback
            known[name] = _Known(replica_id, policy, row[-3], health, host)
            if not force and not due(policy, health, started_at or created_at, now):
                continue
            assert check is not None  # a policy comes from a check
            port = (ports or {}).get(str(check["port"]))
            if port is None:
                failed_early[name] = ProbeResult(False, now, None, f"port {check['port']} is not published")
                continue
            # The replica's own host: loopback on the docker runtime, its node's address on a swarm.
            targets.append(target_from_spec(name, host or LOOPBACK, int(port), check))
        if app is None:  # a full sweep: forget the replicas gone since
            with self._lock:
                for gone in set(self._checked) - live:
                    del self._checked[gone]
        results = dict(self.prober.check_all(targets)) if targets else {}
        results.update(failed_early)
        if not results and not promote:
            return report
        if not self.may_write():  # this node stopped leading while it probed (paused, lease lost): record nothing
            return report
        rotation_changed = self._record(results, promote, known, report)
        lost = lost_hosts(report.hosts) if self.on_hosts_lost is not None else frozenset()
        if lost and self.on_hosts_lost is not None:
            self.on_hosts_lost(lost)
        if rotation_changed and self.router is not None:
            try:
                self.router.sync()
            except TemporaryError as exc:
                log.warning("routing update after health changes failed", extra={"error": str(exc)})
        if report.unhealthy_apps:
            self.on_unhealthy(report.unhealthy_apps)
        return report

    def _record(
        self,
        results: dict[str, ProbeResult],
        promote: list[int],
        known: dict[str, _Known],
        report: SweepReport,
    ) -> bool:
        """Apply each result to the replica's health; write (in one statement) only the replicas whose health
        changed in more than the time and latency of their last check, or whose row has not been refreshed
        for a while (workflows.health.worth_recording). A check that changed nothing writes nothing."""
        now = utcnow()
        pending: dict[str, _Known] = {}
        for name, result in results.items():
            if name not in known:
                continue
            replica_id, policy, _app, health, host = known[name]
            verdict = health_verdict(health, result, policy)
            with self._lock:
                seen = self._checked.get(replica_id)
            stored = seen.stored if seen is not None else health
            if not worth_recording(stored, verdict, policy, now):
                with self._lock:
                    self._checked[replica_id] = _Checked(stored, verdict.health)
                self._report(report, name, result, verdict.health, host)
                continue
            pending[name] = known[name]
        rotation_changed = False
        if not pending and not promote:
            return False
        with self.sessions.begin() as session:
            if promote:
                mark_healthy(session, promote)
                rotation_changed = True
            if not pending:
                return rotation_changed
            # Re-read what is written, in the write transaction: a concurrent check (a health-check job) may
            # have recorded a newer result meanwhile; a late result then changes nothing.
            rows = health_rows_for_update(session, [v.replica_id for v in pending.values()])
            changes: list[dict[str, Any]] = []
            written: dict[int, ReplicaHealth] = {}
            for row in rows:
                replica_id, name = row[0], row[1]
                _, policy, app_name, _health, host = pending[name]
                result = results[name]
                stored = _stored(row)
                verdict = health_verdict(self._current(replica_id, stored), result, policy)
                h = verdict.health
                changes.append(
                    {
                        "id": replica_id,
                        "health": h.state,
                        "consecutive_successes": h.consecutive_successes,
                        "consecutive_failures": h.consecutive_failures,
                        "last_check_at": h.last_check_at,
                        "last_error": h.last_error,
                        "last_latency_ms": h.last_latency_ms,
                        "updated_at": now,
                    }
                )
                written[replica_id] = h
                self._report(report, name, result, h, host)
                if verdict.transition is not None:
                    before, after = verdict.transition
                    report.transitions.append((name, before, after))
                    rotation_changed = rotation_changed or "healthy" in (before, after)
                    record(
                        session,
                        f"replica.{after}",
                        f"replica {name}: {before} -> {after} ({result.detail})",
                        actor="health",
                        app_name=app_name,
                        replica=name,
                        detail=result.detail,
                    )
                if verdict.replace:
                    report.unhealthy_apps.add(app_name)
            if changes:
                write_health(session, changes)  # one executemany by primary key
        with self._lock:
            for replica_id, h in written.items():
                self._checked[replica_id] = _Checked(h, h)
                if self._snapshot is not None:  # planned from with the kept rows (see _read)
                    self._written[replica_id] = h
        return rotation_changed

    @staticmethod
    def _report(report: SweepReport, name: str, result: ProbeResult, h: ReplicaHealth, host: str | None) -> None:
        report.checked += 1
        if host:
            unreachable = not result.ok and result.detail in UNREACHABLE
            report.hosts.append(HostHealth(host, h.state, unreachable))
        report.results[name] = {
            "ok": result.ok,
            "detail": result.detail,
            "latency_ms": result.latency_ms,
            "state": h.state,
        }

    def check_app(self, app: str) -> dict[str, Any]:
        """The `health-check` job: every replica of the app, due or not."""
        report = self.run(app=app, force=True)
        return {
            "checked": report.checked,
            "replicas": report.results,
            "transitions": [list(t) for t in report.transitions],
        }
