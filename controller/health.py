"""The health sweep: probe every replica that is due, record verdicts, and act on transitions.

Each replica is checked as its own revision says (during a rollout the old replicas keep their old
check). Which replicas are due and what a result means are pure (`workflows.health`); the probes run concurrently
(`probe.Prober`), so a sweep costs about one timeout, not the sum. A transition is stored on the replica
and written as an event; a change of rotation is pushed to nginx at once; a replica that crossed its
failure threshold makes its app drift, which a `reconcile` job repairs (subject to the replacement backoff).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Router, TemporaryError
from orchestry.models.base import utcnow
from orchestry.models.db import reads_of
from orchestry.models.events import record
from orchestry.models.replicas import Replica, with_specs
from orchestry.probe import Prober, Target, target_from_spec
from orchestry.workflows.health import (
    HealthState,
    ProbeResult,
    ReplicaHealth,
    due,
    health_verdict,
    policy_from_spec,
)
from orchestry.workflows.hosts import UNREACHABLE, HostHealth, lost_hosts

log = logging.getLogger("orchestry.health")
LOOPBACK = "127.0.0.1"


@dataclass
class SweepReport:
    checked: int = 0
    transitions: list[tuple[str, str, str]] = field(default_factory=list)  # (replica, before, after)
    unhealthy_apps: set[str] = field(default_factory=set)
    hosts: list[HostHealth] = field(default_factory=list)  # each probed replica's host and health after the sweep
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _health(r: Replica) -> ReplicaHealth:
    state: HealthState = "healthy" if r.health == "healthy" else "unhealthy" if r.health == "unhealthy" else "unknown"
    return ReplicaHealth(
        state,
        r.consecutive_successes,
        r.consecutive_failures,
        r.last_check_at,
        r.last_error,
        r.last_latency_ms,
    )


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

    def run(self, app: str | None = None, force: bool = False) -> SweepReport:
        """Probe what is due (every replica of `app` when forced) and record the verdicts."""
        now = utcnow()
        report = SweepReport()
        targets: list[Target] = []
        failed_early: dict[str, ProbeResult] = {}
        promote: list[int] = []  # replicas of apps without a check: running is healthy
        with reads_of(self.sessions)() as session:  # a read: no write lock on SQLite (probes come after)
            for replica, _app_name, spec in with_specs(session, app=app):
                check = spec.get("healthCheck")
                policy = policy_from_spec(check)
                if policy is None:
                    if replica.health != "healthy":
                        promote.append(replica.id)
                    continue
                started = replica.started_at or replica.created_at
                if not force and not due(policy, _health(replica), started, now):
                    continue
                port = (replica.ports or {}).get(str(check["port"]))
                if port is None:
                    failed_early[replica.name] = ProbeResult(False, now, None, f"port {check['port']} is not published")
                    continue
                # The replica's own host: loopback on the docker runtime, its node's address on a swarm.
                targets.append(target_from_spec(replica.name, replica.host or LOOPBACK, int(port), check))
        results = dict(self.prober.check_all(targets)) if targets else {}
        results.update(failed_early)
        if not results and not promote:
            return report
        if not self.may_write():  # this node stopped leading while it probed (paused, lease lost): record nothing
            return report
        rotation_changed = self._record(results, promote, report)
        if rotation_changed and self.router is not None:
            try:
                self.router.sync()
            except TemporaryError as exc:
                log.warning("routing update after health changes failed", extra={"error": str(exc)})
        lost = lost_hosts(report.hosts) if self.on_hosts_lost is not None else frozenset()
        if lost and self.on_hosts_lost is not None:
            self.on_hosts_lost(lost)
        if report.unhealthy_apps:
            self.on_unhealthy(report.unhealthy_apps)
        return report

    def _record(self, results: dict[str, ProbeResult], promote: list[int], report: SweepReport) -> bool:
        rotation_changed = False
        with self.sessions.begin() as session:
            for replica_id in promote:
                row = session.get(Replica, replica_id)
                if row is not None:
                    row.health = "healthy"
                    rotation_changed = True
            rows = with_specs(session, names=list(results))
            for row, app_name, spec in rows:
                policy = policy_from_spec(spec.get("healthCheck"))
                if policy is None:
                    continue
                result = results[row.name]
                verdict = health_verdict(_health(row), result, policy)
                h = verdict.health
                row.health, row.consecutive_successes, row.consecutive_failures = (
                    h.state,
                    h.consecutive_successes,
                    h.consecutive_failures,
                )
                row.last_check_at, row.last_error, row.last_latency_ms = (
                    h.last_check_at,
                    h.last_error,
                    h.last_latency_ms,
                )
                report.checked += 1
                if row.host:
                    unreachable = not result.ok and result.detail in UNREACHABLE
                    report.hosts.append(HostHealth(row.host, h.state, unreachable))
                report.results[row.name] = {
                    "ok": result.ok,
                    "detail": result.detail,
                    "latency_ms": result.latency_ms,
                    "state": h.state,
                }
                if verdict.transition is not None:
                    before, after = verdict.transition
                    report.transitions.append((row.name, before, after))
                    rotation_changed = rotation_changed or "healthy" in (before, after)
                    record(
                        session,
                        f"replica.{after}",
                        f"replica {row.name}: {before} -> {after} ({result.detail})",
                        actor="health",
                        app_name=app_name,
                        replica=row.name,
                        detail=result.detail,
                    )
                if verdict.replace:
                    report.unhealthy_apps.add(app_name)
        return rotation_changed

    def check_app(self, app: str) -> dict[str, Any]:
        """The `health-check` job: every replica of the app, due or not."""
        report = self.run(app=app, force=True)
        return {
            "checked": report.checked,
            "replicas": report.results,
            "transitions": [list(t) for t in report.transitions],
        }
