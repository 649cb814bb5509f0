"""`host-drain`: drain a lost host in Swarm, so that its replicas' replacements go to the hosts that answer.

Enqueued by the leader's health sweep when every replica probed on a host fails while other hosts answer
(`workflows/hosts.py`). Idempotent: a host already drained is left as it is.
"""

from __future__ import annotations

from typing import Any

from orchestry.jobs.base import JobContext, PermanentError, TemporaryError
from orchestry.jobs.fenced import FencedRuntime
from orchestry.runtime.types import ContainerFailed, EngineUnavailable


def host_drain(ctx: JobContext) -> dict[str, Any]:
    address = str(ctx.args.get("address") or "")
    runtime = ctx.runtime
    if not address or not isinstance(runtime, FencedRuntime):
        raise PermanentError("host-drain needs a host address and the swarm runtime")
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
        )
    return {"address": address, "drained": True, "host": node.name, "availability": node.availability}
