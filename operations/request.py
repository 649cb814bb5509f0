"""One way to request an operation: write the desired state, enqueue the job that converges to it and record
the event, all in the caller's transaction (so they commit together or not at all).

Every place that asks for work on an app goes through `request_operation`: the API (up, down, scale, delete,
a health check), registration (a new revision's rollout), the autoscaler, the reconcile sweep and the health
sweep's repairs. The caller commits (and wakes the dispatcher)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from orchestry.models.apps import App
from orchestry.models.events import record
from orchestry.models.jobs import Enqueued, enqueue


def request_operation(
    session: Session,
    app: App | str,
    kind: str,
    *,
    actor: str,
    desired: Mapping[str, Any] | None = None,
    args: dict[str, Any] | None = None,
    event: str | None = None,
    message: str = "",
    details: Mapping[str, Any] | None = None,
    locked: bool = True,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
) -> Enqueued:
    """Set `desired` on the app (its columns: status, status_reason, desired_replicas), enqueue a `kind` job
    for it (under the app's lock unless `locked` is False: one live operation per app) and, with `event`,
    record it with `message`, the job's id and `details`.

    `app` is the app's row, or its name when nothing of the app's row changes."""
    name = app if isinstance(app, str) else app.name
    if desired:
        if isinstance(app, str):
            raise TypeError("desired state needs the app's row, not its name")
        for column, value in desired.items():
            if column not in App.__table__.columns:
                raise ValueError(f"desired state: apps has no column {column}")
            setattr(app, column, value)
    queued = enqueue(
        session,
        kind,
        app_name=name,
        lock=name if locked else None,
        args=args,
        actor=actor,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
    )
    if event is not None:
        record(session, event, message, actor=actor, app_name=name, job_id=queued.job.id, **(details or {}))
    return queued


def request_task(
    session: Session, kind: str, *, lock: str, args: dict[str, Any], actor: str, max_attempts: int = 5
) -> Enqueued:
    """Enqueue a job that is no app's operation (a certificate's issuance, a host's drain), under `lock`: one
    live job per certificate or host. In the caller's transaction, like `request_operation`."""
    return enqueue(session, kind, lock=lock, args=args, actor=actor, max_attempts=max_attempts)
