"""Job kinds and their handlers. A kind is a stable name stored in the jobs table.

The seven app kinds share one handler, `converge`: the API writes the desired state (replicas, status,
revision, restart count) before it enqueues, so deploying, scaling, stopping, deleting, repairing, rolling
back and restarting are all "make the containers match the app row". They stay distinct kinds because
users read them in the job history, and because a request of one kind supersedes a waiting job of another.
"""

from __future__ import annotations

from typing import Any

from orchestry.jobs.base import Handler
from orchestry.jobs.cert_issue import cert_issue
from orchestry.jobs.converge import converge
from orchestry.jobs.health_check import health_check
from orchestry.jobs.host_activate import host_activate
from orchestry.jobs.host_drain import host_drain
from orchestry.jobs.noop import noop
from orchestry.jobs.webhook_deliver import webhook_deliver

APP_KINDS = ("deploy", "scale", "stop", "delete", "reconcile", "rollback", "restart")

# A job's inputs, by kind: the arguments its handler reads (JobContext.args holds only these). The rest of a
# job's arguments record what was requested, for its history: a scale's or an up's `replicas`, a rollout's
# `revision`, a repair's `why`. The handler converges to the app's row (desired_replicas, status, revision),
# which the latest request wrote: a scale job that joined a waiting one, or that the autoscaler's next
# decision overtook, still converges to the count in force, not to the number it carries.
INPUTS: dict[str, tuple[str, ...]] = {
    "delete": ("force", "volumes"),
    "scale": ("wake",),  # a wake from zero (operations/wake.py): when the first held request arrived
    "cert-issue": ("host",),
    "host-drain": ("address", "host", "why"),
    "host-activate": ("host", "began"),
    "webhook-deliver": ("delivery",),
}


def inputs(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a `kind` job that its handler may read."""
    return {key: value for key, value in args.items() if key in INPUTS.get(kind, ())}


HANDLERS: dict[str, Handler] = {
    "deploy": converge,  # `up`, or the rollout of a new revision (one extra replica at a time)
    "scale": converge,  # to the desired replica count
    "stop": converge,  # `down`: desired 0, the app stays
    "delete": converge,  # desired 0, then the app's rows go (its events stay)
    "reconcile": converge,  # repair drift found by the reconcile sweep (a dead replica, an orphan)
    "rollback": converge,  # the rollout of a revision that restores an earlier one's spec
    "restart": converge,  # a rolling restart: the app's restart count changed its replicas' hash
    "health-check": health_check,  # probe one app's replicas now, on request
    "cert-issue": cert_issue,  # obtain or renew one `tls: auto` host's certificate over ACME (jobs/cert_issue.py)
    "host-drain": host_drain,  # a host's replicas moved elsewhere: at once when it is lost, health-gated on request
    "host-activate": host_activate,  # a drained host takes replicas again (back from a loss, or on request)
    "webhook-deliver": webhook_deliver,  # POST one event to one webhook, signed (jobs/webhook_deliver.py)
    "noop": noop,  # measures the queue itself (bench/job_latency)
}
