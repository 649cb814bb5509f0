"""The `autoscale` periodic job: read each running app's metric windows, decide, store, act.

Observe → decide → act, level-triggered: every evaluation re-reads the policy in force, the replicas and
the stored samples, asks the pure `workflows.scaling.decide_scale`, stores the decision (the
stabilization window reads them back), and when the target differs from the desired count writes the
new count and enqueues a `scale` job in the same transaction, as the API does for a user. Running it twice
decides twice from the same inputs: the second finds the count already changed, or the cooldown running.

Two rhythms: every `autoscale_seconds` every app is evaluated; right after each metrics collection only a
scale-out may act (`fast=True`), so a surge is answered within a collection interval instead of waiting for
the next evaluation, while scale-in stays on the slower, patient rhythm.

An app with a job of another kind (a rollout, a stop) is not scaled until that job ends: enqueueing would
supersede it. Every write is fenced: a node whose lease ran out acts on nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Fence, NotLeader
from orchestry.models import jobs as jobq
from orchestry.models.apps import App, RevisionMemo, get_app_for_update, running_app_inputs
from orchestry.models.cluster import db_now
from orchestry.models.db import reads_of
from orchestry.models.metrics import Averages, metric_window, window_of, windows_averages
from orchestry.models.scaling import (
    PURGE_BATCH,
    histories,
    history_for,
    purge_decisions,
    record_decision,
    replica_states,
    replica_states_of,
)
from orchestry.operations.policy import effective_policy
from orchestry.operations.request import request_operation
from orchestry.workflows.revision import policy_in_force, revision_view
from orchestry.workflows.scaling import (
    NO_HISTORY,
    MetricWindow,
    ReplicaState,
    ScaleDecision,
    ScalingHistory,
    ScalingPolicy,
    decide_scale,
    outcome,
    scales_to_zero,
)
from orchestry.workflows.wake import IDLE_EVENT

log = logging.getLogger("orchestry.autoscaler")
REVISION_CACHE = 10_000  # revisions whose scaling section the survey keeps (started over beyond)

PURGE_SECONDS = 60.0  # old decisions are purged once a minute (and every round while a backlog remains)


def _scaling_of(spec: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A revision's scaling section, and whether it has a health check (its replicas' readiness counts)."""
    return dict(spec.get("scaling") or {}), revision_view(spec).probed


@dataclass(frozen=True)
class Inputs:
    """Everything one decision is made from (also what the evaluate endpoint fills in from a request)."""

    policy: ScalingPolicy
    current: int
    replicas: tuple[ReplicaState, ...]
    window: MetricWindow
    burst: MetricWindow
    quiet: MetricWindow | None = None  # over idleSeconds, for an app that may idle (minReplicas 0, auto)


def gather(session: Session, app: App, now: datetime, cap: int) -> Inputs:
    policy = effective_policy(session, app, cap)
    replicas = replica_states(session, app)
    names = [r.name for r in replicas]
    window = metric_window(session, app.id, now - timedelta(seconds=policy.window_seconds), replicas=names)
    burst = metric_window(session, app.id, now - timedelta(seconds=policy.burst_window_seconds), replicas=names)
    quiet = None
    if scales_to_zero(policy) and app.desired_replicas > 0:
        quiet = metric_window(session, app.id, now - timedelta(seconds=policy.idle_seconds), replicas=())
    return Inputs(policy, app.desired_replicas, replicas, window, burst, quiet)


def decide(session: Session, app: App, inputs: Inputs, now: datetime) -> ScaleDecision:
    """The decision for these inputs, with the app's stored history (stabilization, cooldown)."""
    history = history_for(session, app.id, now, inputs.policy.stabilization_window_seconds)
    return decide_scale(
        inputs.window, inputs.policy, inputs.current, inputs.replicas, now, history, inputs.burst, inputs.quiet
    )


def snapshot(inputs: Inputs) -> dict[str, Any]:
    """The metric snapshot stored with a decision: what it saw, in JSON."""
    return {
        "window": _window_json(inputs.window),
        "burst": _window_json(inputs.burst),
        **({"quiet": _window_json(inputs.quiet)} if inputs.quiet is not None else {}),
        "replicas": len(inputs.replicas),
        "ready": sum(1 for r in inputs.replicas if r.ready),
    }


def _window_json(window: MetricWindow) -> dict[str, Any]:
    return {
        "span_seconds": round(window.span_seconds, 3),
        "rps": _round(window.rps),
        "p95_ms": _round(window.p95_ms),
        "active_connections": _round(window.active_connections),
        "replicas": {
            name: {k: _round(v) for k, v in dataclasses.asdict(s).items()} for name, s in window.replicas.items()
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class Evaluation:
    app: str
    decision: ScaleDecision
    job_id: int | None  # the scale job enqueued, if the decision acted


class Autoscaler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        fence: Callable[[], Fence],
        *,
        max_replicas: int,
        retention_seconds: float,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessions = sessions
        self._reads = reads_of(sessions)
        self.fence = fence
        self.max_replicas = max_replicas
        self.retention_seconds = retention_seconds
        self.wake = wake
        # each revision's scaling section and whether it has a health check
        self._revisions = RevisionMemo(_scaling_of, REVISION_CACHE)
        self._purge_due = 0.0  # time.monotonic() of the next purge of old decisions

    def run(self, fast: bool = False) -> list[Evaluation]:
        """Evaluate every running app (`fast`: act on scale-outs only, store nothing else).

        One survey reads every running app's inputs in a few queries and decides on them; only the apps
        whose decision is stored or acted on are evaluated again one by one, in a write transaction that
        re-reads everything (the decision stored is the one made under the app's lock). The others (a
        manual app's "stays", every app of the fast pass but a surging one) cost no transaction of their own:
        an idle cluster of N apps costs a handful of statements per round, not N transactions."""
        try:
            with self._reads() as session:
                names = self.survey(session, fast)
            done = [e for e in (self._evaluate(name, fast) for name in names) if e is not None]
            if not fast and time.monotonic() >= self._purge_due:  # once a minute: a write transaction each time
                fence = self.fence()
                with self.sessions.begin() as session:
                    purged = purge_decisions(session, db_now(session), self.retention_seconds)
                    fence.check()  # a leader paused past its lease deletes nothing either
                if purged < PURGE_BATCH:  # else a backlog: the next round goes on with it
                    self._purge_due = time.monotonic() + PURGE_SECONDS
        except NotLeader:
            return []
        except SQLAlchemyError as exc:
            log.warning("autoscale skipped", extra={"error": str(exc)})
            return []
        if any(e.job_id is not None for e in done):
            self.wake()
        return done

    def survey(self, session: Session, fast: bool) -> list[str]:
        """The running apps (by name) whose decision, made on the inputs read here, would be stored or acted
        on (`workflows.scaling.outcome`): a fast pass's scale-outs; else every decision but a manual app's
        unchanged one (a job in the way still stores the decision held back)."""
        now = db_now(session)
        rows = running_app_inputs(session)
        revisions = self._revisions.load(session, [(r[4], r[5]) for r in rows])
        policies: dict[int, ScalingPolicy] = {}
        probed: dict[int, bool] = {}
        currents = {row[0]: row[2] for row in rows}
        for app_id, _name, _current, api_section, rev_id, content_hash in rows:
            section, probed[app_id] = revisions.get((rev_id, content_hash), ({}, False))
            policies[app_id] = policy_in_force(
                dict(api_section) if api_section is not None else section, self.max_replicas
            )
        # A manual app's decision depends on its bounds only: no metrics, replicas or history are read for it.
        auto = {i: p for i, p in policies.items() if p.mode == "auto"}
        replicas = replica_states_of(session, {i: probed[i] for i in auto})
        idling = {i for i, p in auto.items() if scales_to_zero(p) and currents[i] > 0}
        windows: dict[float, dict[int, dict[str | None, Averages]]] = {}
        spans = {p.window_seconds for p in auto.values()} | {p.burst_window_seconds for p in auto.values()}
        for seconds in spans | {auto[i].idle_seconds for i in idling}:
            ids = [
                i
                for i, p in auto.items()
                if seconds in (p.window_seconds, p.burst_window_seconds) or (i in idling and seconds == p.idle_seconds)
            ]
            windows[seconds] = windows_averages(session, ids, now - timedelta(seconds=seconds))
        past: dict[int, ScalingHistory] = {}
        for seconds in {p.stabilization_window_seconds for p in auto.values()}:
            ids = [i for i, p in auto.items() if p.stabilization_window_seconds == seconds]
            past.update(histories(session, ids, now, seconds))
        chosen = []
        for app_id, name, current, *_ in rows:
            policy, states = policies[app_id], replicas.get(app_id, ())
            names = [r.name for r in states]
            window = window_of(windows.get(policy.window_seconds, {}).get(app_id, {}), names)
            burst = window_of(windows.get(policy.burst_window_seconds, {}).get(app_id, {}), names)
            quiet = window_of(windows[policy.idle_seconds].get(app_id, {}), ()) if app_id in idling else None
            history = past.get(app_id, NO_HISTORY)
            decision = decide_scale(window, policy, current, states, now, history, burst, quiet)
            # No job is read here: one in the way changes what is stored, never whether something is.
            if outcome(decision, policy.mode, fast=fast, job=None).store:
                chosen.append(name)
        return chosen

    def _evaluate(self, name: str, fast: bool) -> Evaluation | None:
        """Decide again on the app `survey` chose, under its lock, and store or act as `outcome` says."""
        fence = self.fence()
        with self.sessions.begin() as session:
            app = get_app_for_update(session, name)
            if app is None or app.status != "running":
                return None
            now = db_now(session)
            inputs = gather(session, app, now, self.max_replicas)
            decision = decide(session, app, inputs, now)
            live = jobq.live_job(session, app.name) if decision.direction != "none" else None
            result = outcome(decision, inputs.policy.mode, fast=fast, job=(live.id, live.kind) if live else None)
            if not result.store:
                return None
            decision, job_id = result.decision, None
            if result.act:
                fence.check()
                job_id = self._act(session, app, decision)
            record_decision(session, app, decision, snapshot(inputs), changed=job_id is not None, job_id=job_id)
            fence.check()  # the commit below is this node's last write of the evaluation
        if job_id is not None:
            log.info(
                "autoscaled",
                extra={"app": name, "from": decision.current, "to": decision.target, "reason": decision.reason},
            )
        return Evaluation(name, decision, job_id)

    def _act(self, session: Session, app: App, decision: ScaleDecision) -> int:
        return request_operation(
            session,
            app,
            "scale",
            actor="autoscaler",
            desired={"desired_replicas": decision.target},
            args={"replicas": decision.target},
            event=IDLE_EVENT if decision.idle else f"scaling.{decision.direction}",
            message=f"{app.name}: {decision.current} → {decision.target}: {decision.reason}",
            details={"current": decision.current, "target": decision.target, "burst": decision.burst},
        ).job.id
