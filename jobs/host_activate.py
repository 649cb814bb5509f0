"""`host-activate`: a drained host takes replicas again.

Requested by an operator (`orchestry host activate NAME`, `POST /api/v1/hosts/<name>/activate`) or by the
leader's host sweep when a host Orchestry drained because it was lost is back (`workflows/hosts.py`
to_activate). Before Swarm may place anything there, the tasks the host kept running while it was cut off must
have stopped: the manager wants them shut down (their slots run elsewhere, or their services are gone), and a
returned host stops them within a second or two. The job waits for that (no attempt counted), so a stale task
never shares the host with new ones; it is never routed either way (it is no slot's current task: the runtime
never reports it as a replica). Level-triggered: activating an active host changes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from orchestry.jobs.base import JobContext, PermanentError, TemporaryError, Wait
from orchestry.jobs.fenced import FencedRuntime
from orchestry.jobs.host_drain import set_host
from orchestry.runtime.types import EngineUnavailable, find_host
from orchestry.workflows.hosts import activate_step

STALE_WAIT_SECONDS = 60.0  # a host that keeps stale tasks this long after the job began: retried with backoff


def host_activate(ctx: JobContext) -> dict[str, Any]:
    runtime = ctx.runtime
    name = str(ctx.args.get("host") or "")
    if not name or not isinstance(runtime, FencedRuntime):
        raise PermanentError("host-activate needs a host name and the swarm runtime")
    try:
        node = find_host(runtime.nodes(), name)
        if node is None:
            raise PermanentError(f"no Swarm host is named {name}")
        stale = runtime.stale_tasks(ctx.settings.cluster_name, node.id)
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot observe host {name}: {exc}") from None
    step = activate_step(node.view(), len(stale))
    if step == "done":
        return {"host": name, "address": node.address, "activated": False, "why": "already active"}
    if step == "wait":
        began = float(ctx.args.get("began") or 0) or time.time()
        if time.time() - began > STALE_WAIT_SECONDS:
            raise TemporaryError(f"host {name} still runs {len(stale)} stale tasks")
        raise Wait(f"host {name} still runs {len(stale)} stale tasks; the manager is stopping them", seconds=0.5)
    was = node.view().drained_for or node.availability
    node = set_host(runtime, name, "active", None)
    ctx.step(f"activate host {name}", address=node.address, was=was)
    with ctx.sessions.begin() as session:
        ctx.event(
            session,
            "host.active",
            f"host {name} ({node.address}) active again: Swarm may place replicas there",
            host=name,
            address=node.address,
            was=was,
        )
    return {"host": name, "address": node.address, "activated": True, "availability": node.availability}
