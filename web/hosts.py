"""/api/v1/hosts: the hosts replicas run on (the swarm runtime): each Swarm node with its state, availability,
labels and the replicas of this installation it runs.

"Nodes" already names Orchestry's controllers (`/api/v1/cluster/status`, `orchestry cluster nodes`, the
`node_id` setting), so the machines that run replicas are "hosts" here and in `orchestry hosts`.

Like the logs, a read of the container engine (the Swarm manager) and nothing else: it writes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from flask import Blueprint, Response, jsonify

from orchestry.runtime.types import EngineUnavailable, HostLister
from orchestry.web.context import close_session, ctx
from orchestry.web.errors import ApiError
from orchestry.web.openapi import operation
from orchestry.web.schemas import ErrorOut, HostOut, HostsOut

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
    runtime = ctx().runtime
    if ctx().settings.runtime != "swarm" or not isinstance(runtime, HostLister):
        raise ApiError(
            409,
            "not_swarm",
            "hosts are listed on the swarm runtime (runtime: swarm); this Orchestry runs its replicas on one "
            "Docker engine",
        )
    try:
        nodes = runtime.nodes()
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
