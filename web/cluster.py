"""/api/v1/cluster: which node answered, who leads (lease holder, term, expiry) and the members.

Also served under `/cluster/...`, where the earlier project had it. Any node answers from the shared
database; the lease row is the truth about leadership.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, jsonify
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from orchestry.models.cluster import ControllerNode, current_lease, db_now
from orchestry.web.context import ctx, session
from orchestry.web.openapi import operation
from orchestry.web.schemas import ClusterHealth, ClusterStatus, LeaderOut, NodeOut

bp = Blueprint("cluster", __name__)


def _leader() -> LeaderOut:
    db = session()
    lease = current_lease(db)
    now = db_now(db)
    if lease is None or lease.holder is None or lease.expires_at is None or lease.expires_at <= now:
        return LeaderOut(leader=None, term=lease.term if lease else 0, expires_at=None, address=None)
    node = db.get(ControllerNode, lease.holder)
    return LeaderOut(
        leader=lease.holder, term=lease.term, expires_at=lease.expires_at, address=node.address if node else None
    )


@bp.get("/api/v1/cluster/status")
@bp.get("/cluster/status")
@operation(
    "This node, the leader (term, lease expiry) and every member with its last heartbeat",
    tag="cluster",
    responses={200: ClusterStatus},
)
def status() -> Response:
    return jsonify(cluster_status().model_dump(mode="json"))


def cluster_status() -> ClusterStatus:
    """This node, the leader and every member with its heartbeat and the routing table its nginx serves."""
    db = session()
    leader = _leader()
    now = db_now(db)
    alive_within = timedelta(seconds=3 * ctx().settings.lease_seconds)
    nodes = [
        NodeOut(
            node_id=n.node_id,
            address=n.address,
            version=n.version,
            started_at=n.started_at,
            heartbeat_at=n.heartbeat_at,
            leader=n.node_id == leader.leader,
            alive=now - n.heartbeat_at <= alive_within,
            routes_generation=n.routes_generation,
            routes_reported_at=n.routes_reported_at,
        )
        for n in db.scalars(select(ControllerNode).order_by(ControllerNode.node_id))
    ]
    me = ctx().settings.node_id
    return ClusterStatus(node=me, is_leader=leader.leader == me, leader=leader, nodes=nodes)


@bp.get("/api/v1/cluster/leader")
@bp.get("/cluster/leader")
@operation("Who leads now", tag="cluster", responses={200: LeaderOut})
def leader() -> Response:
    return jsonify(_leader().model_dump(mode="json"))


@bp.get("/api/v1/cluster/health")
@bp.get("/cluster/health")
@operation(
    "This node's view: database reachable, a leader elected",
    tag="cluster",
    responses={200: ClusterHealth, 503: ClusterHealth},
)
def health() -> tuple[Response, int]:
    me = ctx().settings.node_id
    try:
        session().execute(text("SELECT 1"))
        has_leader = _leader().leader is not None
        database = "ok"
    except SQLAlchemyError:
        has_leader, database = False, "unreachable"
    ok = database == "ok" and has_leader
    out = ClusterHealth(status="ok" if ok else "degraded", node=me, has_leader=has_leader, database=database)
    return jsonify(out.model_dump(mode="json")), 200 if ok else 503
