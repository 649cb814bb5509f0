"""The converge handler with a recording fake runtime (the real engine is tested in test_operations.py)."""

from __future__ import annotations

import time

import pytest
from fakes import FakeRuntime
from sqlalchemy import select, update

from orchestry.config import load_settings
from orchestry.jobs.base import Fence, JobContext, NotLeader, PermanentError, TemporaryError, Wait
from orchestry.jobs.converge import converge
from orchestry.models.apps import get_app
from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.models.events import Event
from orchestry.models.replicas import Replica, replicas_of
from orchestry.operations.registration import Submission, register
from orchestry.spec import load_specs

SPEC = """apiVersion: v1
kind: App
metadata: {name: web}
spec:
  image: orchestry-testapp:latest
  ports: [{containerPort: 8080}]
  environment: [{name: COLOR, value: "%s"}]
"""


@pytest.fixture
def env(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    runtime = FakeRuntime()
    settings = load_settings({"database_url": db_url, "cluster_name": "c"})
    yield sessions, runtime, settings
    engine.dispose()


def submit(sessions, color: str) -> None:  # type: ignore[no-untyped-def]
    loaded = load_specs(SPEC % color, "application/yaml").specs[0]
    with sessions.begin() as s:
        register(
            s, Submission("web", loaded.normalized, loaded.content_hash, ()), raw="", raw_format="yaml", actor="test"
        )


def desire(sessions, replicas: int, status: str = "running") -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        app = get_app(s, "web")
        assert app is not None
        app.desired_replicas, app.status = replicas, status


def ctx(env, valid: bool = True) -> JobContext:  # type: ignore[no-untyped-def]
    sessions, runtime, settings = env
    fence = Fence("n", 1, lambda: time.monotonic() + 60 if valid else 0.0)
    context = JobContext(
        job_id=0,
        kind="scale",
        app_name="web",
        args={},
        attempt=1,
        sessions=sessions,
        runtime=runtime,
        settings=settings,
        fence=fence,
    )
    context.step = lambda name, status="ok", **kw: None  # type: ignore[method-assign]  # no job row here
    return context


def healthy_all(sessions) -> None:  # type: ignore[no-untyped-def]
    """What the health sweep would record for replicas that answer their probe."""
    with sessions.begin() as s:
        s.execute(update(Replica).values(health="healthy"))


def drive(env, rounds: int = 20) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Run the handler as the dispatcher would: again after each Wait (meanwhile probes pass)."""
    for _ in range(rounds):
        try:
            return converge(ctx(env))
        except Wait:
            healthy_all(env[0])
    raise AssertionError("did not converge")


def test_running_twice_changes_nothing_the_second_time(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 3)
    first = drive(env)
    # the three starts run at once (threads): their order is not part of the contract
    assert sorted(runtime.actions) == ["start c-web-1 r1", "start c-web-2 r1", "start c-web-3 r1"]
    assert first["replicas"] == 3
    runtime.actions.clear()
    second = drive(env)
    assert runtime.actions == [] and second["started"] == [] and second["replicas"] == 3
    with sessions() as s:
        rows = replicas_of(s, get_app(s, "web").id)  # type: ignore[union-attr]
        assert [(r.slot, r.state, r.port is not None) for r in rows] == [(1, "running", True)] * 1 + [
            (2, "running", True),
            (3, "running", True),
        ]
        assert get_app(s, "web").status == "running"  # type: ignore[union-attr]


def test_scale_in_then_stop_then_delete(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 3)
    drive(env)
    desire(sessions, 1)
    drive(env)
    assert sorted(runtime.containers) == ["c-web-1"]
    desire(sessions, 0, "stopped")
    drive(env)
    assert runtime.containers == {}
    desire(sessions, 0, "deleting")
    result = drive(env)
    assert result.get("deleted") is True
    with sessions() as s:
        assert get_app(s, "web") is None


def test_new_revision_rolls_out_with_a_surge_of_one(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    drive(env)
    runtime.actions.clear()
    submit(sessions, "green")  # revision 2; the app is running, so a deploy job was enqueued too
    drive(env)
    assert [a.split()[0] for a in runtime.actions] == ["start", "stop", "start", "stop"]  # surge of one
    assert runtime.actions[0] == "start c-web-3 r2" and runtime.actions[1] == "stop c-web-1"
    assert {c.revision for c in runtime.containers.values()} == {2}


def test_failures_are_classified(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 1)
    runtime.down = True
    with pytest.raises(TemporaryError, match="cannot observe"):
        drive(env)
    runtime.down = False
    runtime.fail_starts = True
    with pytest.raises(TemporaryError, match="exited at once"):
        drive(env)
    runtime.fail_starts = False
    runtime.images.clear()
    with pytest.raises(PermanentError, match="not available locally"):
        drive(env)


def test_a_void_fence_acts_on_nothing(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    with pytest.raises(NotLeader):
        converge(ctx(env, valid=False))
    assert runtime.actions == []


def restart_app(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions.begin() as s:
        app = get_app(s, "web")
        assert app is not None
        app.restarts += 1


def test_a_restart_replaces_every_replica_of_the_same_revision_one_at_a_time(env) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    drive(env)
    before = {c.id for c in runtime.containers.values()}
    runtime.actions.clear()
    restart_app(sessions)
    drive(env)
    assert [a.split()[0] for a in runtime.actions] == ["start", "stop", "start", "stop"]  # a surge of one
    assert runtime.actions[0] == "start c-web-3 r1"  # the same revision
    assert not before & {c.id for c in runtime.containers.values()} and len(runtime.containers) == 2
    runtime.actions.clear()
    drive(env)
    assert runtime.actions == []  # done: running it again restarts nothing


def unhealthy_new(sessions, revision: int) -> None:  # type: ignore[no-untyped-def]
    """What the health sweep records for new replicas that fail their probe."""
    with sessions.begin() as s:
        s.execute(update(Replica).where(Replica.revision == revision).values(health="unhealthy"))


ROLLBACK = "rollout: {onFailure: rollback}\n"


def rollout_events(sessions) -> list[tuple[str, int, str | None]]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        rows = s.scalars(select(Event).where(Event.type.like("rollout.%")).order_by(Event.id)).all()
        return [(e.type, e.details["revision"], e.details.get("on_failure")) for e in rows]


def submit_spec(sessions, text: str) -> None:  # type: ignore[no-untyped-def]
    loaded = load_specs(text, "application/yaml").specs[0]
    with sessions.begin() as s:
        register(
            s, Submission("web", loaded.normalized, loaded.content_hash, ()), raw=text, raw_format="yaml", actor="t"
        )


@pytest.mark.parametrize("policy", ["halt", "rollback"])
def test_a_new_revision_that_fails_halts_or_rolls_back(env, policy: str) -> None:  # type: ignore[no-untyped-def]
    sessions, runtime, _ = env
    extra = ROLLBACK if policy == "rollback" else ""
    submit_spec(sessions, SPEC % "blue" + extra)
    desire(sessions, 2)
    drive(env)
    submit_spec(sessions, SPEC % "green" + extra)  # revision 2
    with pytest.raises(Wait):
        converge(ctx(env))  # the first new replica starts, and waits to be healthy
    unhealthy_new(sessions, 2)
    if policy == "halt":
        with pytest.raises(PermanentError, match="did not become healthy"):
            converge(ctx(env))
        with sessions() as s:
            assert get_app(s, "web").revision == 2  # type: ignore[union-attr]
        assert {c.revision for c in runtime.containers.values()} == {1}
        assert rollout_events(sessions) == [("rollout.halted", 2, "halt")]
        return
    result = drive(env)
    assert result["rolled_back"] == {"from": 2, "restored": 1, "revision": 3, "reason": result["rolled_back"]["reason"]}
    assert "did not become healthy" in result["rolled_back"]["reason"]
    with sessions() as s:
        app = get_app(s, "web")
        assert app is not None and app.revision == 3 and app.status == "running"
        assert [(r.number, r.restored_from) for r in app.revisions] == [(1, None), (2, None), (3, 1)]
        assert app.revisions[2].content_hash == app.revisions[0].content_hash
    # the old replicas kept serving: the restored revision has their spec, so none was replaced
    assert sorted(runtime.containers) == ["c-web-1", "c-web-2"]
    assert {c.revision for c in runtime.containers.values()} == {1}
    # halted (then rolled back), and the rollback's completion: events a webhook can subscribe to
    assert rollout_events(sessions) == [("rollout.halted", 2, "rollback"), ("rollout.rolled_back", 3, None)]
