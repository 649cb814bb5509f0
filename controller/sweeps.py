"""The leader's periodic work besides dispatching: the reconcile sweep.

Observe every container of the cluster in one engine call, read every app's desired state, and enqueue a
`reconcile` job for each app that drifted. A failed observation ends the sweep: it never concludes from an
engine that did not answer that the replicas are gone.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Fence
from orchestry.jobs.converge import REPLACED_EVENT
from orchestry.models import jobs as jobq
from orchestry.models.apps import app_status, desired_states
from orchestry.models.base import utcnow
from orchestry.models.db import reads_of
from orchestry.models.events import recent_times
from orchestry.operations.request import request_operation
from orchestry.runtime.types import EngineUnavailable, Runtime
from orchestry.workflows.converge import Seen, desired_of
from orchestry.workflows.drift import AppState, drifted
from orchestry.workflows.health import replacement_backoff

log = logging.getLogger("orchestry.reconcile")


def app_states(session: Session) -> list[AppState]:
    rows = desired_states(session)
    return [
        AppState(name, status, desired_of(status, replicas, spec_hash, restarts))
        for name, status, replicas, spec_hash, restarts in rows
    ]


def reconcile_sweep(
    sessions: sessionmaker[Session], runtime: Runtime, cluster: str, fence: Fence | None = None
) -> list[int]:
    """Returns the ids of the jobs it enqueued; with a `fence`, enqueues nothing once it has run out (a leader
    paused in the middle of a sweep wakes up past its lease and writes nothing).

    The busy apps and the desired state are read *before* observing: a job that ends between the two
    reads cannot make its half-removed containers look like drift. Busy first: a job settles its app and
    itself in one commit, so an app not busy at the first read shows its settled status at the second.
    Each candidate is read again in the writing transaction (still without a job, still not failed): each
    statement of the reads may see a newer commit than the one before it."""
    with reads_of(sessions)() as session:  # a read: no write lock on SQLite
        busy = jobq.live_locks(session)
        states = app_states(session)
    try:
        containers = runtime.list_replicas(cluster)
    except EngineUnavailable as exc:
        # the component probe reports Docker's outage (once, then once a minute): not every sweep
        log.debug("reconcile skipped: the engine did not answer", extra={"error": str(exc)})
        return []
    observed: dict[str, list[Seen]] = defaultdict(list)
    for c in containers:
        observed[c.app].append(Seen(c.name, c.slot, c.spec_hash, c.running, c.running))
    enqueued = []
    with sessions.begin() as session:
        for name, why in drifted(states, dict(observed), busy):
            if jobq.live_job(session, name) is not None:
                continue  # a job started meanwhile; it will see what we saw
            if app_status(session, name) == "failed":
                continue  # its job failed meanwhile: failed apps are left to the user
            kind = "delete" if why == "deletion has no job" else "reconcile"
            job = request_operation(session, name, kind, actor="reconcile", args={"why": why}).job
            log.info("drift found", extra={"app": name, "why": why, "job_id": job.id})
            enqueued.append(job.id)
        if enqueued and fence is not None:
            fence.check()  # right before the commit: past it, the transaction rolls back
    return enqueued


def enqueue_repairs(sessions: sessionmaker[Session], apps: set[str]) -> list[int]:
    """A `reconcile` job for each app with an unhealthy replica, unless it has a job or backs off."""
    now = utcnow()
    enqueued = []
    with sessions.begin() as session:
        for name in sorted(apps):
            if jobq.live_job(session, name) is not None:
                continue
            if replacement_backoff(recent_times(session, name, REPLACED_EVENT), now) is not None:
                continue
            job = request_operation(session, name, "reconcile", actor="health", args={"why": "unhealthy replica"}).job
            enqueued.append(job.id)
    return enqueued
