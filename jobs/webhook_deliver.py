"""`webhook-deliver`: POST one delivery (an event, or a test) to its webhook, signed; retried with backoff.

Enqueued with the event it carries (operations/webhooks.py). Idempotent: a delivery no longer pending (sent,
given up) is not sent again; one sent whose outcome was lost (a failover between the POST and its record) is
sent again with the same `Orchestry-Delivery` key, which the receiver uses to drop the repeat. The URL and
secret are unsealed here only. httpx with short timeouts, no redirects followed, no proxy from the
environment, and at most RESPONSE_BYTES of the answer read (for the history's error).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx

from orchestry import __version__
from orchestry.config.secretbox import SecretKeyError, load_box
from orchestry.jobs.base import JobContext, PermanentError, TemporaryError
from orchestry.models.base import utcnow
from orchestry.models.webhooks import DISABLED, ToSend, drop, record_attempt, to_send
from orchestry.workflows.webhooks import EventFacts, payload, settle, signature

TIMEOUT = httpx.Timeout(5.0, connect=3.0, pool=None)
RESPONSE_BYTES = 1024
MAX_ERROR = 300


def webhook_deliver(ctx: JobContext) -> dict[str, Any]:
    delivery_id = int(ctx.args["delivery"])
    with ctx.sessions() as session:
        found = to_send(session, delivery_id)
    if found is None:
        return {"delivery": delivery_id, "skipped": "its webhook was deleted"}
    if found.status != "pending":
        return {"delivery": delivery_id, "status": found.status}
    if not found.enabled and found.event is not None:
        # Disabled after this delivery was enqueued (disabling drops those waiting; this one raced it).
        with ctx.sessions.begin() as session:
            drop(session, delivery_id, now=utcnow())
        return {"delivery": delivery_id, "status": "dropped", "why": DISABLED}
    try:
        box = load_box(ctx.settings)
        url, secret = box.open(found.url_ciphertext), box.open(found.secret_ciphertext)
    except SecretKeyError as exc:
        raise PermanentError(f"webhooks need the secret key: {exc}") from None
    body = payload(found.key, found.webhook, ctx.settings.cluster_name, _facts(found), found.format)
    ctx.fence.check()
    started = time.monotonic()
    code, error = post(url, body, found.key, secret, found.event_type)
    took = round((time.monotonic() - started) * 1000, 1)
    attempt = found.attempts + 1
    settled = settle(code, error, attempt)
    with ctx.sessions.begin() as session:
        record_attempt(
            session,
            delivery_id,
            status=settled.status,
            response_code=code,
            error=settled.reason,
            duration_ms=took,
            now=utcnow(),
        )
    ctx.step(
        f"POST to webhook {found.webhook}",
        status="ok" if settled.status == "delivered" else "failed",
        attempt=attempt,
        response_code=code,
        ms=took,
        **({"error": settled.reason} if settled.reason else {}),
    )
    if settled.status == "pending":
        raise TemporaryError(f"webhook {found.webhook}: {settled.reason}", seconds=settled.retry_in)
    if settled.status == "failed":
        raise PermanentError(f"webhook {found.webhook}: {settled.reason}")
    return {"delivery": delivery_id, "webhook": found.webhook, "response_code": code, "attempts": attempt}


def _facts(found: ToSend) -> EventFacts:
    ev = found.event
    if ev is None:  # a test delivery (or its event is gone)
        return EventFacts(
            None,
            found.event_type,
            found.created_at,
            "webhooks",
            f"test delivery to webhook {found.webhook}: it is reachable and checks the signature",
        )
    return EventFacts(ev.id, ev.type, ev.created_at, ev.actor, ev.message, ev.app_name, ev.details)


def post(url: str, body: bytes, key: str, secret: str, event_type: str) -> tuple[int | None, str | None]:
    """(status code, None) when the receiver answered, with a snippet of its body as error unless 2xx;
    (None, why) when it did not."""
    stamp = int(datetime.now(UTC).timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"orchestry/{__version__}",
        "Orchestry-Delivery": key,
        "Orchestry-Event": event_type,
        "Orchestry-Signature": signature(secret, stamp, body),
    }
    try:
        with (
            httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client,
            client.stream("POST", url, content=body, headers=headers) as resp,
        ):
            if resp.is_success:
                return resp.status_code, None
            snippet = b""
            for chunk in resp.iter_bytes():
                snippet += chunk
                if len(snippet) >= RESPONSE_BYTES:
                    break
            text = snippet[:RESPONSE_BYTES].decode("utf-8", "replace").strip().replace("\n", " ")
            return resp.status_code, text[:MAX_ERROR] or None
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:MAX_ERROR] or 'no answer'}"
