"""The autoscale job against a real database (SQLite or PostgreSQL), with samples written as the metrics job
would: acting, storing, idempotence, fencing, and what it leaves alone. Docker and nginx are not involved:
the end-to-end run is in test_autoscaling.py."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from seed import running_app, samples
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestry.controller.autoscaler import Autoscaler
from orchestry.jobs.base import Fence
from orchestry.models import jobs as jobq
from orchestry.models.apps import App, get_app
from orchestry.models.base import utcnow
from orchestry.models.events import Event
from orchestry.models.scaling import ScalingDecisionRow, purge_decisions

SPEC = """\
apiVersion: v1
kind: App
metadata: {name: web}
spec:
  image: orchestry-testapp:latest
  ports: [{containerPort: 8080}]
scaling:
  mode: %s
  minReplicas: 1
  maxReplicas: 6
  targetRPSPerReplica: 10
  windowSeconds: 10
  cooldownSeconds: 60
  maxScaleOutStep: 4
"""


def fence(valid: bool = True) -> Fence:
    return Fence("n", 1, lambda: time.monotonic() + 60 if valid else 0.0)


def scaler(sessions: sessionmaker[Session], valid: bool = True) -> Autoscaler:
    return Autoscaler(sessions, lambda: fence(valid), max_replicas=50, retention_seconds=86400)


def setup_app(sessions: sessionmaker[Session], rps: float, replicas: int = 1, mode: str = "auto") -> None:
    """A running app with `replicas` healthy replicas and 10 s of samples at `rps` for the whole app."""
    with sessions.begin() as s:
        app = running_app(s, "web", SPEC % mode, replicas, port_base=30000)
        s.add_all(samples(app.id, utcnow(), 6, rps=rps, ready_replicas=replicas))


def desired(sessions: sessionmaker[Session]) -> int:
    with sessions() as s:
        app = get_app(s, "web")
        assert app is not None
        return app.desired_replicas


def stored(sessions: sessionmaker[Session]) -> list[ScalingDecisionRow]:
    with sessions() as s:
        return list(s.scalars(select(ScalingDecisionRow).order_by(ScalingDecisionRow.id)))


def test_load_scales_out_once_and_a_second_run_changes_nothing(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)  # 40 rps on one replica, target 10: 4x
    (evaluation,) = scaler(sessions).run()
    assert (evaluation.decision.current, evaluation.decision.target) == (1, 5)  # ceil(1 x 4 / 0.8)
    assert evaluation.job_id is not None and desired(sessions) == 5
    with sessions() as s:
        job = s.get(jobq.Job, evaluation.job_id)
        assert job is not None and (job.kind, job.args, job.created_by) == ("scale", {"replicas": 5}, "autoscaler")
        assert s.scalar(select(Event.type).where(Event.type == "scaling.out")) == "scaling.out"
    (row,) = stored(sessions)
    assert row.changed and row.metrics["window"]["rps"] == 40 and row.ratios["rps"] == pytest.approx(4.0)

    # Level-triggered: the same inputs again (the new replicas not there yet) do not scale again.
    (again,) = scaler(sessions).run()
    assert again.job_id is None and desired(sessions) == 5
    assert [r.changed for r in stored(sessions)] == [True, False]


def test_manual_mode_stores_nothing_and_never_scales(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=400, mode="manual")
    assert scaler(sessions).run() == []
    assert desired(sessions) == 1 and stored(sessions) == []


def test_manual_mode_is_still_bound_by_min_and_max(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=0, replicas=1, mode="manual")
    with sessions.begin() as s:
        app = get_app(s, "web")
        assert app is not None
        app.desired_replicas = 9  # above maxReplicas 6 (e.g. the policy was lowered)
    (evaluation,) = scaler(sessions).run()
    assert evaluation.decision.target == 6 and "above maxReplicas 6" in evaluation.decision.reason
    assert desired(sessions) == 6


def test_a_rollout_in_progress_is_not_superseded(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    with sessions.begin() as s:
        deploy = jobq.enqueue(s, "deploy", app_name="web", lock="web", actor="t").job.id
    (evaluation,) = scaler(sessions).run()
    assert evaluation.job_id is None and "waiting for job" in evaluation.decision.reason
    assert desired(sessions) == 1
    with sessions() as s:
        job = s.get(jobq.Job, deploy)
        assert job is not None and job.status == "queued"


def test_a_scale_job_waiting_is_joined(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    with sessions.begin() as s:
        waiting = jobq.enqueue(s, "scale", app_name="web", lock="web", args={"replicas": 2}, actor="user").job.id
    (evaluation,) = scaler(sessions).run()
    assert evaluation.job_id == waiting and desired(sessions) == 5
    with sessions() as s:
        job = s.get(jobq.Job, waiting)
        assert job is not None and job.args == {"replicas": 5}


def test_a_node_without_a_valid_lease_writes_nothing(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    assert scaler(sessions, valid=False).run() == []
    assert desired(sessions) == 1 and stored(sessions) == []
    with sessions() as s:
        assert s.scalars(select(jobq.Job)).all() == []


def test_the_fast_path_acts_on_scale_out_only(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=1, replicas=3)  # idle: a scale-in, which the fast path leaves to the slow one
    assert scaler(sessions).run(fast=True) == []
    assert stored(sessions) == [] and desired(sessions) == 3
    (evaluation,) = scaler(sessions).run()
    assert evaluation.decision.direction == "in"


def test_the_fast_path_takes_no_write_lock_unless_it_scales_out(sessions: sessionmaker[Session]) -> None:
    """It runs after every metrics sample for every app: a quiet app costs reads only (issue 10)."""
    from sqlalchemy import event

    setup_app(sessions, rps=1, replicas=3)
    engine = sessions.kw["bind"]
    locking: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE") or "FOR UPDATE" in statement:
            locking.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert scaler(sessions).run(fast=True) == []
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert locking == []


def test_stopped_apps_are_not_evaluated(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    with sessions.begin() as s:
        app = get_app(s, "web")
        assert app is not None
        app.status = "stopped"
    assert scaler(sessions).run() == []


def test_decisions_that_changed_nothing_are_purged_after_an_hour(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    scaler(sessions).run()
    scaler(sessions).run()
    with sessions.begin() as s:
        assert purge_decisions(s, utcnow() + timedelta(minutes=61), retention_seconds=86400) == 1
    assert [r.changed for r in stored(sessions)] == [True]
    with sessions.begin() as s:
        assert purge_decisions(s, utcnow() + timedelta(days=2), retention_seconds=86400) == 1
    assert stored(sessions) == []


def test_deleting_an_app_deletes_its_decisions(sessions: sessionmaker[Session]) -> None:
    setup_app(sessions, rps=40)
    scaler(sessions).run()
    with sessions.begin() as s:
        s.delete(s.scalars(select(App)).one())
    assert stored(sessions) == []
