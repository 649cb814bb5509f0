"""Webhook deliveries are enqueued with the events they carry, in the transaction that records them.

`models.events.record` notes each event in its session; just before any session commits (`before_commit`,
installed on SQLAlchemy's Session class when this package is imported), the events recorded since are
matched against the enabled webhooks, and each match becomes a delivery row and its `webhook-deliver` job
(through `request_task`, the one enqueue place). Event and job commit together or not at all: a leader that
dies after the commit leaves the job to the next one; one that dies before it recorded nothing to send.

Cost: nothing for a commit that recorded no event; else one read of the webhooks table (a handful of rows),
and per match a count of the webhook's pending deliveries (MAX_PENDING bounds a dead receiver's backlog: past
it a delivery is recorded as dropped, without a job).
"""

from __future__ import annotations

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from orchestry.models.events import RECORDED, take_recorded
from orchestry.models.webhooks import Webhook, WebhookDelivery, add_delivery, pending_count, subscribers
from orchestry.operations.request import request_task
from orchestry.workflows.webhooks import DELIVER_KIND, MAX_ATTEMPTS, MAX_PENDING, TEST_EVENT, matches


def enqueue_deliveries(session: Session) -> list[WebhookDelivery]:
    """Deliveries (and their jobs) for the events this session recorded since the last call."""
    recorded = take_recorded(session)
    if not recorded:
        return []
    session.flush()  # the events' ids; an event rolled back since it was recorded is not persistent any more
    events = [e for e in recorded if inspect(e).persistent]
    hooks = subscribers(session) if events else []
    out = []
    for ev in events:
        for hook in hooks:
            if matches(hook.events, ev.type, ev.details):
                out.append(_deliver(session, hook.id, ev.type, ev.id))
    return out


def request_test_delivery(session: Session, hook: Webhook) -> WebhookDelivery:
    """A `webhook.test` delivery to this webhook alone, whatever it subscribes to."""
    return _deliver(session, hook.id, TEST_EVENT, None)


def _deliver(session: Session, webhook_id: int, event_type: str, event_id: int | None) -> WebhookDelivery:
    if pending_count(session, webhook_id) >= MAX_PENDING:
        return add_delivery(session, webhook_id, event_type, event_id, "dropped")
    row = add_delivery(session, webhook_id, event_type, event_id, "pending")
    row.job_id = request_task(
        session,
        DELIVER_KIND,
        lock=f"delivery:{row.id}",
        args={"delivery": row.id},
        actor="webhooks",
        # The handler gives up after MAX_ATTEMPTS POSTs; the headroom is for runs that never sent (a hand-back).
        max_attempts=MAX_ATTEMPTS + 3,
    ).job.id
    return row


def _before_commit(session: Session) -> None:
    if session.info.get(RECORDED):
        enqueue_deliveries(session)


def _after_rollback(session: Session) -> None:
    take_recorded(session)


if not event.contains(Session, "before_commit", _before_commit):
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_rollback", _after_rollback)
