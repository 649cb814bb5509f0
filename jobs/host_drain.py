"""`host-drain`: move every replica off a host of the swarm.

Two callers, two ways:
- **A lost host** (`address`; enqueued by the leader's health sweep when every replica probed there fails while
  other hosts answer, `workflows/hosts.py`): Swarm's `drain` at once, labelled `lost`, so its slots are
  rescheduled on the hosts that answer (its replicas are unreachable already: there is nothing to keep serving).
  The host is activated again once it is back (`host-activate`, requested by the leader's host sweep).
- **An operator's drain** (`host`: its name; `orchestry host drain`, `POST /api/v1/hosts/<name>/drain`): health-
  gated, 0 failed requests. The host is paused (Swarm places nothing new there), each app with replicas on it
  gets a `reconcile` job, whose converge replaces them like a rollout (a replica elsewhere ready and routed
  before the one on the host drains and stops: `workflows/converge.py`, evicted), and once nothing of this
  installation runs there the host is set to Swarm's `drain`. The job waits (no attempt counted) meanwhile.

Level-triggered (`workflows/hosts.py` drain_step): a re-run picks up where the last one stopped.
"""

from __future__ import annotations

from typing import Any

from orchestry.jobs.base import JobContext, PermanentError, TemporaryError, Wait
from orchestry.jobs.fenced import FencedRuntime
from orchestry.models.apps import app_status
from orchestry.models.jobs import job_steps, live_job
from orchestry.operations.request import request_operation
from orchestry.runtime.types import ContainerFailed, EngineUnavailable, NodeInfo, Observed, find_host
from orchestry.workflows.hosts import REQUESTED, drain_step

PROGRESS = "moving replicas off host"


def host_drain(ctx: JobContext) -> dict[str, Any]:
    runtime = ctx.runtime
    if not isinstance(runtime, FencedRuntime):
        raise PermanentError("host-drain needs the swarm runtime")
    if ctx.args.get("host"):
        return _drain_requested(ctx, runtime, str(ctx.args["host"]))
    return _drain_lost(ctx, runtime, str(ctx.args.get("address") or ""))


def _drain_lost(ctx: JobContext, runtime: FencedRuntime, address: str) -> dict[str, Any]:
    if not address:
        raise PermanentError("host-drain needs a host address or a host name")
    try:
        node = runtime.drain_host(address)
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot drain the host at {address}: {exc}") from None
    except ContainerFailed as exc:
        raise PermanentError(str(exc)) from None
    if node is None:
        return {"address": address, "drained": False, "why": "no Swarm host has this address"}
    ctx.step(f"drain host {node.name}", address=address, node=node.id, why=ctx.args.get("why"))
    with ctx.sessions.begin() as session:
        ctx.event(
            session,
            "host.drained",
            f"host {node.name} ({address}) drained in Swarm: {ctx.args.get('why') or 'lost'}",
            host=node.name,
            address=address,
            why="lost",
        )
    return {"address": address, "drained": True, "host": node.name, "availability": node.availability}


def _drain_requested(ctx: JobContext, runtime: FencedRuntime, name: str) -> dict[str, Any]:
    for _ in range(3):  # pause, then look again; each later state waits or ends
        node, there = _observe(ctx, runtime, name)
        step = drain_step(node.view(), len(there))
        if step == "pause":
            set_host(runtime, name, "pause")
            ctx.step(f"pause host {name}", detail="Swarm places nothing new there; its replicas move one at a time")
            continue
        if step == "move":
            _request_moves(ctx, there)
            _progress(ctx, name, there)
            raise Wait(f"{len(there)} replicas left on host {name}", seconds=0.5)
        if step == "drain":
            node = set_host(runtime, name, "drain")
            ctx.step(f"drain host {name}", detail="nothing of this installation runs there")
            with ctx.sessions.begin() as session:
                ctx.event(
                    session,
                    "host.drained",
                    f"host {name} ({node.address}) drained: its replicas moved to other hosts",
                    host=name,
                    address=node.address,
                    why=REQUESTED,
                )
        return {"host": name, "address": node.address, "drained": True, "availability": "drain"}
    raise TemporaryError(f"host {name} did not stay paused")


def _observe(ctx: JobContext, runtime: FencedRuntime, name: str) -> tuple[NodeInfo, list[Observed]]:
    try:
        node = find_host(runtime.nodes(), name)
        if node is None:
            raise PermanentError(f"no Swarm host is named {name}")
        there = [o for o in runtime.list_replicas(ctx.settings.cluster_name) if o.node == node.id and o.running]
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot observe host {name}: {exc}") from None
    return node, there


def set_host(runtime: FencedRuntime, name: str, availability: str, label: str | None = REQUESTED) -> NodeInfo:
    """Set a host's Swarm availability (and Orchestry's drained label: None removes it); an unanswering
    manager is retried, a refusal ends the job. host-activate sets it too."""
    try:
        return runtime.set_availability(name, availability, label)
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot set host {name} to {availability}: {exc}") from None
    except ContainerFailed as exc:
        raise PermanentError(str(exc)) from None


def _request_moves(ctx: JobContext, there: list[Observed]) -> None:
    """A `reconcile` for each app with replicas on the host and no live job (a live one sees them itself: its
    converge reads the hosts every round). A failed app is left to its user, as the reconcile sweep does: when
    only failed apps keep replicas there, the drain fails, naming them (else it would wait forever)."""
    apps = sorted({o.app for o in there})
    failed = []
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        for app in apps:
            status = app_status(session, app)
            if status == "failed":
                failed.append(app)
            if status in (None, "failed") or live_job(session, app) is not None:
                continue
            request_operation(
                session, app, "reconcile", actor=f"job:{ctx.job_id}", args={"why": f"host {ctx.args['host']} drained"}
            )
    if failed and len(failed) == len(apps):
        raise PermanentError(
            f"host {ctx.args['host']} still runs replicas of failed apps ({', '.join(failed)}): their replacements "
            "could not start elsewhere; fix or stop them (`orchestry down`), then drain the host again"
        )


def _progress(ctx: JobContext, name: str, there: list[Observed]) -> None:
    """A step when what is left on the host changed since the last one (the job runs again every half second)."""
    left = sorted(o.name for o in there)
    with ctx.sessions.begin() as session:
        steps = job_steps(session, ctx.job_id)
    last = next((s for s in reversed(steps) if s.get("step", "").startswith(PROGRESS)), None)
    if last is None or last.get("replicas") != left:
        ctx.step(f"{PROGRESS} {name}: {len(left)} left", status="running", replicas=left)
