"""The host-drain (on request) and host-activate handlers against a recording fake swarm and a real database:
each re-run takes the next step (`workflows/hosts.py`), asks the apps on the host to move, and ends; a failed app
fails the drain instead of keeping it waiting. The real swarm: tests/test_swarm.py."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import load_settings
from orchestry.jobs.base import Fence, JobContext, PermanentError, Wait
from orchestry.jobs.fenced import FencedRuntime
from orchestry.jobs.host_activate import host_activate
from orchestry.jobs.host_drain import host_drain
from orchestry.models.apps import get_app
from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.models.events import query_events
from orchestry.models.jobs import query_jobs
from orchestry.operations.registration import Submission, register
from orchestry.runtime.types import NodeInfo, Observed
from orchestry.spec import load_specs
from orchestry.workflows.hosts import DRAINED_LABEL, LOST, REQUESTED

SPEC = "apiVersion: v1\nkind: App\nmetadata: {name: %s}\nspec:\n  image: img\n  ports: [{containerPort: 8080}]\n"


class Swarm:
    """Two hosts; replicas placed by the test; every change recorded."""

    def __init__(self) -> None:
        self.hosts = {n: NodeInfo(f"id-{n}", n, f"10.0.0.{n[-1]}", "ready", "active", "worker") for n in ("h1", "h2")}
        self.replicas: list[Observed] = []
        self.stale: list[str] = []
        self.changes: list[tuple[str, str, str | None]] = []

    def nodes(self) -> list[NodeInfo]:
        return list(self.hosts.values())

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        return [r for r in self.replicas if app is None or r.app == app]

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        labels = {DRAINED_LABEL: drained_for} if drained_for else {}
        self.hosts[name] = dataclasses.replace(self.hosts[name], availability=availability, labels=labels)
        self.changes.append((name, availability, drained_for))
        return self.hosts[name]

    def drain_host(self, address: str) -> NodeInfo | None:
        raise AssertionError("not a lost host")

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        return self.stale

    def place(self, app: str, slot: int, host: str) -> None:
        self.replicas.append(
            Observed(
                f"{app}{slot}",
                f"c-{app}-{slot}",
                app,
                slot,
                1,
                "h",
                "running",
                "10.0.0.2",
                30000,
                None,
                node=f"id-{host}",
            )
        )


@pytest.fixture
def env(db_url: str) -> Any:
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    settings = load_settings({"database_url": db_url, "cluster_name": "c", "runtime": "swarm"})
    yield sessions, settings
    engine.dispose()


def app(sessions: sessionmaker[Session], name: str, status: str = "running") -> None:
    loaded = load_specs(SPEC % name, "application/yaml").specs[0]
    with sessions.begin() as s:
        register(s, Submission(name, loaded.normalized, loaded.content_hash, ()), raw="", raw_format="yaml", actor="t")
    with sessions.begin() as s:
        row = get_app(s, name)
        assert row is not None
        row.status, row.desired_replicas = status, 1


def context(env: Any, swarm: Swarm, kind: str, args: dict[str, Any]) -> JobContext:
    sessions, settings = env
    fence = Fence("n", 1, lambda: time.monotonic() + 60)
    job = JobContext(0, kind, None, args, 1, sessions, FencedRuntime(swarm, fence, 0), settings, fence)  # type: ignore[arg-type]
    job.step = lambda name, status="ok", **kw: job.steps.append({"step": name, **kw})  # type: ignore[method-assign]
    return job


def test_a_requested_drain_pauses_asks_the_apps_to_move_then_drains(env: Any) -> None:
    sessions, _ = env
    swarm = Swarm()
    app(sessions, "web")
    swarm.place("web", 1, "h1")
    swarm.place("web", 2, "h2")
    with pytest.raises(Wait, match="1 replicas left on host h2"):
        host_drain(context(env, swarm, "host-drain", {"host": "h2"}))
    assert swarm.changes == [("h2", "pause", REQUESTED)]
    with sessions.begin() as s:
        jobs = query_jobs(s, app_name="web", status=None, kind="reconcile", limit=5)
        assert [j.args["why"] for j in jobs] == ["host h2 drained"]
    with pytest.raises(Wait):  # again while it moves: no second reconcile (one is live), no second pause
        host_drain(context(env, swarm, "host-drain", {"host": "h2"}))
    assert swarm.changes == [("h2", "pause", REQUESTED)]
    with sessions.begin() as s:
        assert len(query_jobs(s, app_name="web", status=None, kind="reconcile", limit=5)) == 1
    swarm.replicas = [r for r in swarm.replicas if r.node != "id-h2"]  # the converge job moved it
    result = host_drain(context(env, swarm, "host-drain", {"host": "h2"}))
    assert result["drained"] and swarm.changes[-1] == ("h2", "drain", REQUESTED)
    with sessions.begin() as s:
        events = query_events(s, type_="host.drained", limit=5)
        assert [(e.details["host"], e.details["why"]) for e in events] == [("h2", REQUESTED)]
    # Done: running it again changes nothing.
    host_drain(context(env, swarm, "host-drain", {"host": "h2"}))
    assert len(swarm.changes) == 2


def test_only_failed_apps_left_on_the_host_fail_the_drain(env: Any) -> None:
    sessions, _ = env
    swarm = Swarm()
    app(sessions, "broken", status="failed")
    swarm.place("broken", 1, "h2")
    with pytest.raises(PermanentError, match=r"failed apps \(broken\)"):
        host_drain(context(env, swarm, "host-drain", {"host": "h2"}))


def test_an_unknown_host_fails_the_drain(env: Any) -> None:
    with pytest.raises(PermanentError, match="no Swarm host is named nope"):
        host_drain(context(env, Swarm(), "host-drain", {"host": "nope"}))


def test_activation_waits_for_the_stale_tasks_then_activates(env: Any) -> None:
    sessions, _ = env
    swarm = Swarm()
    swarm.set_availability("h2", "drain", LOST)
    swarm.stale = ["task1"]
    with pytest.raises(Wait, match="1 stale tasks"):
        host_activate(context(env, swarm, "host-activate", {"host": "h2", "began": time.time()}))
    assert swarm.changes == [("h2", "drain", LOST)]
    swarm.stale = []
    result = host_activate(context(env, swarm, "host-activate", {"host": "h2"}))
    assert result["activated"] and swarm.changes[-1] == ("h2", "active", None)
    with sessions.begin() as s:
        events = query_events(s, type_="host.active", limit=5)
        assert [(e.details["host"], e.details["was"]) for e in events] == [("h2", LOST)]
    assert not host_activate(context(env, swarm, "host-activate", {"host": "h2"}))["activated"]
