"""/api/v1/hosts: the hosts replicas run on (the swarm runtime): each Swarm node with its state, availability,
labels and the replicas of this installation it runs.

"Nodes" already names Orchestry's controllers (`/api/v1/cluster/status`, `orchestry cluster nodes`, the
`node_id` setting), so the machines that run replicas are "hosts" here and in `orchestry hosts`.

Like the logs, a read of the container engine (the Swarm manager) and nothing else: it writes nothing.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel

from orchestry.operations.request import request_task
from orchestry.runtime.types import EngineUnavailable, HostLister, NodeInfo, find_host
from orchestry.web.context import actor, close_session, ctx, session, wake_dispatcher
from orchestry.web.errors import ApiError, field
from orchestry.web.jobs import accepted
from orchestry.web.openapi import operation
from orchestry.web.schemas import Accepted, ErrorOut, HostOut, HostsOut

bp = Blueprint("hosts", __name__)


@bp.get("/api/v1/hosts")
@operation(
    "The Swarm's hosts: state, availability, labels, and the replicas each runs (runtime: swarm)",
    tag="cluster",
    responses={200: HostsOut, 409: ErrorOut, 503: ErrorOut},
    description="409 `not_swarm` on the docker runtime (one host); 503 when the Swarm manager does not answer.",
)
def hosts() -> Response:
    close_session()
    lister, runtime = swarm_runtime(), ctx().runtime
    assert runtime is not None  # swarm_runtime found it
    try:
        nodes = lister.nodes()
        replicas = runtime.list_replicas(ctx().settings.cluster_name)
    except EngineUnavailable as exc:
        raise ApiError(503, "unavailable", f"the Swarm manager did not answer: {exc}") from None
    apps: dict[str, Counter[str]] = defaultdict(Counter)
    for replica in replicas:
        if replica.running and replica.node:
            apps[replica.node][replica.app] += 1
    out = HostsOut(
        runtime="swarm",
        hosts=[
            HostOut(
                name=n.name,
                id=n.id,
                address=n.address,
                state=n.state,
                availability=n.availability,
                role=n.role,
                leader=n.leader,
                labels=n.labels,
                replicas=sum(apps[n.id].values()),
                apps=dict(sorted(apps[n.id].items())),
            )
            for n in nodes
        ],
    )
    return jsonify(out.model_dump(mode="json"))


HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")  # a hostname, or a Swarm node id
CHANGE_RESPONSES: dict[int, type[BaseModel] | str] = {
    202: Accepted,
    404: ErrorOut,
    409: ErrorOut,
    422: ErrorOut,
    503: ErrorOut,
}


def swarm_runtime() -> HostLister:
    """The runtime's hosts; 409 `not_swarm` on the docker runtime (one host)."""
    runtime = ctx().runtime
    if ctx().settings.runtime != "swarm" or not isinstance(runtime, HostLister):
        raise ApiError(
            409,
            "not_swarm",
            "hosts are listed on the swarm runtime (runtime: swarm); this Orchestry runs its replicas on one "
            "Docker engine",
        )
    return runtime


def _host(name: str) -> tuple[NodeInfo, list[NodeInfo]]:
    """The host named `name` (hostname or node id) and every host: 422 for a malformed name, 404 for none."""
    if not HOST_NAME.fullmatch(name):
        rule = "must be a host's name or Swarm node id (letters, digits, '.', '_', '-'; at most 253)"
        raise ApiError(422, "invalid", f"name: {rule}", [field("name", rule)])
    runtime = swarm_runtime()
    try:
        nodes = runtime.nodes()
    except EngineUnavailable as exc:
        raise ApiError(503, "unavailable", f"the Swarm manager did not answer: {exc}") from None
    node = find_host(nodes, name)
    if node is None:
        raise ApiError(404, "not_found", f"host {name!r} does not exist", [field("name", "no Swarm host has it")])
    return node, nodes


def _request(kind: str, node: NodeInfo, args: dict[str, object], message: str) -> tuple[Response, int]:
    db = session()
    queued = request_task(db, kind, lock=f"host:{node.address}", args=args, actor=actor())
    db.commit()
    wake_dispatcher()
    return accepted(queued.job, created=queued.created, message=message)


@bp.post("/api/v1/hosts/<string(maxlength=300):name>/drain")
@operation(
    "Move every replica off a host, health-gated (0 failed requests), then drain it in Swarm",
    tag="cluster",
    responses=CHANGE_RESPONSES,
    description="A `host-drain` job: the host is paused (nothing new placed there), each replica on it is "
    "replaced on another host, ready and routed before it drains and stops, then the host is set to Swarm's "
    "`drain`. 404 for an unknown host; 422 naming `name` when it is the last active host (its replicas would "
    "have nowhere to go); 409 `not_swarm` on the docker runtime. Operators only.",
)
def drain(name: str) -> tuple[Response, int]:
    node, nodes = _host(name)
    others = [n for n in nodes if n.id != node.id and n.availability == "active" and n.state == "ready"]
    if not others:
        rule = "is the swarm's last active host: its replicas would have nowhere to go"
        raise ApiError(422, "invalid", f"name: host {node.name} {rule}", [field("name", rule)])
    return _request("host-drain", node, {"host": node.name, "why": "requested"}, f"drain of host {node.name} queued")


@bp.post("/api/v1/hosts/<string(maxlength=300):name>/activate")
@operation(
    "Let Swarm place replicas on a drained or paused host again",
    tag="cluster",
    responses=CHANGE_RESPONSES,
    description="A `host-activate` job: once the tasks the host ran while cut off have stopped, its "
    "availability is set to `active`. 404 for an unknown host; 409 `not_swarm` on the docker runtime. "
    "Operators only.",
)
def activate(name: str) -> tuple[Response, int]:
    node, _nodes = _host(name)
    args = {"host": node.name, "began": time.time(), "why": "requested"}
    return _request("host-activate", node, args, f"activation of host {node.name} queued")
