"""A job's arguments are its inputs: the handler gets only the arguments its kind reads (jobs.registry.INPUTS);
the rest (a scale's `replicas`, a rollout's `revision`, a repair's `why`) records what was requested, for the
history, and the job converges to the app's row, which the latest request wrote."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fakes import FakeRuntime
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from test_jobs_converge import desire, submit

from orchestry.config import load_settings
from orchestry.jobs import registry
from orchestry.jobs.base import Fence, JobContext, Wait
from orchestry.jobs.converge import converge
from orchestry.jobs.registry import inputs
from orchestry.jobs.runner import run_job
from orchestry.models import jobs as jobq
from orchestry.models.apps import get_app
from orchestry.models.cluster import Held, acquire_or_renew
from orchestry.models.jobs import JOB_KINDS
from orchestry.models.replicas import Replica
from orchestry.operations.request import request_operation


@pytest.mark.parametrize(
    ("kind", "args", "seen"),
    [
        ("scale", {"replicas": 5}, {}),
        ("deploy", {"replicas": 3}, {}),
        ("deploy", {"revision": 2}, {}),
        ("reconcile", {"why": "a replica is missing"}, {}),
        ("stop", {}, {}),
        ("delete", {"force": True, "volumes": True}, {"force": True, "volumes": True}),
        ("health-check", {}, {}),
    ],
)
def test_a_handler_reads_only_its_kinds_inputs(kind: str, args: dict[str, Any], seen: dict[str, Any]) -> None:
    assert inputs(kind, args) == seen


def registered(sessions: sessionmaker[Session], desired: int) -> None:
    submit(sessions, "blue")
    desire(sessions, desired)


def test_the_runner_hands_a_scale_job_no_replica_count(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        seen.append(dict(ctx.args))
        return {}

    monkeypatch.setitem(registry.HANDLERS, "scale", handler)
    registered(sessions, 2)
    with sessions.begin() as s:
        held = acquire_or_renew(s, "a", 30)
        assert isinstance(held, Held)
        app = get_app(s, "web")
        assert app is not None
        request_operation(s, app, "scale", actor="t", desired={"desired_replicas": 5}, args={"replicas": 5})
    with sessions.begin() as s:
        claimed = jobq.claim_next(s, node="a", term=held[0])
    assert claimed is not None and claimed.args == {"replicas": 5}
    fence = Fence("a", held[0], lambda: time.monotonic() + 60)
    settings = load_settings({"database_url": "sqlite://", "cluster_name": "c"})
    assert run_job(claimed, sessions=sessions, runtime=FakeRuntime(), settings=settings, fence=fence) == "succeeded"
    assert seen == [{}]
    with sessions() as s:  # the requested count stays in the job's history
        assert s.scalars(select(jobq.Job.args).where(jobq.Job.id == claimed.id)).one() == {"replicas": 5}


def test_a_scale_job_converges_to_the_count_in_force_not_the_one_it_carries(sessions: sessionmaker[Session]) -> None:
    """A scale to 5 whose waiting job a later request (or the autoscaler) set back to 2: 2 replicas."""
    registered(sessions, 2)
    runtime = FakeRuntime()
    settings = load_settings({"database_url": "sqlite://", "cluster_name": "c"})
    for _ in range(20):
        ctx = JobContext(
            0, "scale", "web", {"replicas": 5}, 1, sessions, runtime, settings, Fence("n", 1, lambda: 1e12)
        )
        ctx.step = lambda name, status="ok", **kw: None  # type: ignore[method-assign]  # no job row here
        try:
            converge(ctx)
            break
        except Wait:
            with sessions.begin() as s:  # what the health sweep records for replicas that answer
                s.execute(update(Replica).values(health="healthy"))
    assert sorted(runtime.containers) == ["c-web-1", "c-web-2"]


def _args_read(function: Any) -> set[str]:
    """The keys a handler's module reads from `ctx.args` (`ctx.args["k"]` or `ctx.args.get("k")`)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(inspect.getmodule(function)))  # type: ignore[arg-type]
    keys: set[str] = set()
    for node in ast.walk(tree):
        target: ast.expr | None = None
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, key = node.func.value, node.args[0] if node.args else None
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "args"
            and isinstance(key, ast.Constant)
            and isinstance(key.value, str)
        ):
            keys.add(key.value)
    return keys


@pytest.mark.parametrize("kind", sorted(registry.HANDLERS))
def test_every_argument_a_handler_reads_is_an_input_of_its_kind(kind: str) -> None:
    """A handler reading an argument its kind does not declare would always see it missing (the merge of the
    certificate and swarm jobs met exactly that): each key read must be an input of every kind it serves."""
    handler = registry.HANDLERS[kind]
    read = _args_read(handler)
    if handler is converge:  # serves several kinds: delete's inputs and a scale's wake are the ones it reads
        assert read <= set(registry.INPUTS["delete"]) | set(registry.INPUTS["scale"])
        assert set(registry.INPUTS["scale"]) == {"wake"}  # read by the scale from zero only (app.woke)
    else:
        assert read <= set(registry.INPUTS.get(kind, ())), f"{kind} reads {sorted(read)}"


def test_the_kinds_a_jobs_filter_accepts_are_the_registered_ones() -> None:
    """web/ may not import jobs/: models.jobs.JOB_KINDS stands for the registry in the API's and the
    dashboard's `kind` filter, and must name every kind (and no other)."""
    assert sorted(JOB_KINDS) == sorted(registry.HANDLERS)
