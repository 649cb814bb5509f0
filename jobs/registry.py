"""Job kinds and their handlers. A kind is a stable name stored in the jobs table.

The seven app kinds share one handler, `converge`: the API writes the desired state (replicas, status,
revision, restart count) before it enqueues, so deploying, scaling, stopping, deleting, repairing, rolling
back and restarting are all "make the containers match the app row". They stay distinct kinds because
users read them in the job history, and because a request of one kind supersedes a waiting job of another.
"""

from __future__ import annotations

from orchestry.jobs.base import Handler
from orchestry.jobs.converge import converge
from orchestry.jobs.health_check import health_check
from orchestry.jobs.noop import noop

APP_KINDS = ("deploy", "scale", "stop", "delete", "reconcile", "rollback", "restart")

HANDLERS: dict[str, Handler] = {
    "deploy": converge,  # `up`, or the rollout of a new revision (one extra replica at a time)
    "scale": converge,  # to the desired replica count
    "stop": converge,  # `down`: desired 0, the app stays
    "delete": converge,  # desired 0, then the app's rows go (its events stay)
    "reconcile": converge,  # repair drift found by the reconcile sweep (a dead replica, an orphan)
    "rollback": converge,  # the rollout of a revision that restores an earlier one's spec
    "restart": converge,  # a rolling restart: the app's restart count changed its replicas' hash
    "health-check": health_check,  # probe one app's replicas now, on request
    "noop": noop,  # measures the queue itself (bench/job_latency)
}
