"""Webhooks, the pure part: which events a webhook takes, what is sent, how it is signed, what an answer means.

Design note. A webhook subscribes to event types of the audit trail (models/events.py); when a transaction
that recorded a matching event commits, a delivery row and its `webhook-deliver` job commit with it
(operations/webhooks.py), so a controller failover loses no notification. The job POSTs the payload; a
receiver drops a repeat (a retry, or a re-run after a failover) by the `Orchestry-Delivery` header, which is
the same on every attempt of one delivery.

The issue's notifications, as the event types Orchestry records (subscribe to a type, a family such as
`leader`, or `*`):

| notification         | event types                                                                  |
| -------------------- | ---------------------------------------------------------------------------- |
| job failed           | job.failed (details.kind: the job's kind)                                    |
| replica replaced     | replica.replaced (also replica.unhealthy / replica.healthy, health changes)  |
| app scaled           | scaling.out, scaling.in (the autoscaler), app.scale (a user's `scale`)       |
| scaled to zero, woke | app.idle (idle for idleSeconds: to 0), app.woke (serving again after a wake) |
| rollout halted       | rollout.halted (details.on_failure: halt, the job fails; or rollback)        |
| rollout rolled back  | rollout.rolled_back (the automatic rollback converged); app.rolled_back (a   |
|                      | revision restored: `rollout.onFailure: rollback`, or `orchestry rollback`)   |
| leader changed       | leader.elected, leader.lease_lost, leader.stepped_down                       |
| node down            | leader.lease_lost (the leading node went silent), host.drained (a Swarm host |
|                      | lost, details.why "lost"; or drained on request, "requested"), host.active   |
|                      | (a host back, or activated), docker.failed / nginx.failed (a component down) |
| certificate failing  | cert.failed                                                                  |

Signature (as Stripe's): `Orchestry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`;
a receiver recomputes it over the raw body and refuses a timestamp too far from its clock (`verify`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from orchestry.workflows.wake import IDLE_EVENT, WOKE_EVENT

# Every event type Orchestry records (tests/test_webhooks_pure.py checks this against the source).
EVENT_TYPES: tuple[str, ...] = (
    "app.created",
    "app.revised",
    "app.deploy",
    "app.stop",
    "app.scale",
    "app.delete",
    "app.rollback",
    "app.restart",
    "app.converged",
    "app.stopped",
    "app.deleted",
    "app.rolled_back",
    "rollout.halted",
    "rollout.rolled_back",
    IDLE_EVENT,
    WOKE_EVENT,
    "replica.replaced",
    "replica.healthy",
    "replica.unhealthy",
    "replica.unknown",
    "scaling.out",
    "scaling.in",
    "scaling.policy",
    "job.failed",
    "cert.added",
    "cert.deleted",
    "cert.issued",
    "cert.renewed",
    "cert.failed",
    "secret.set",
    "secret.deleted",
    "registry.login",
    "registry.logout",
    "leader.elected",
    "leader.lease_lost",
    "leader.stepped_down",
    "docker.failed",
    "nginx.failed",
    "host.drained",
    "host.active",
    "webhook.added",
    "webhook.deleted",
    "webhook.disabled",
    "webhook.enabled",
)
FAMILIES: tuple[str, ...] = tuple(sorted({t.split(".")[0] for t in EVENT_TYPES}))
TEST_EVENT = "webhook.test"  # a test delivery's type: sent to one webhook on request, never subscribed to
DELIVER_KIND = "webhook-deliver"  # the job kind; its own failures are never delivered (no loop)

Format = Literal["json", "slack"]
FORMATS: tuple[str, ...] = ("json", "slack")
MAX_WEBHOOKS = 20
MAX_SUBSCRIPTIONS = 32
MAX_URL = 2048
MAX_BODY = 65_536  # bytes of a payload; a larger event is sent without its details
MAX_TEXT = 3000  # characters of a Slack message
MAX_PENDING = 100  # deliveries of one webhook waiting at once; more are dropped (a receiver down for long)
MAX_ATTEMPTS = 6
RETRY_SECONDS = (1.0, 5.0, 30.0, 120.0, 600.0)  # after attempt 1, 2, ...: ~13 min from first to last attempt
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept between the signature's time and its clock
NAME = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


@dataclass(frozen=True)
class EventFacts:
    """What a payload says of an event (a test delivery has no event row: id None)."""

    id: int | None
    type: str
    created_at: datetime
    actor: str
    message: str
    app: str | None = None
    details: Mapping[str, Any] | None = None


# -- subscriptions ---------------------------------------------------------------------------------------------


def subscription_problem(entry: str) -> str | None:
    """Why `entry` is no subscription: `*`, a known event type, or a family (its types' common prefix)."""
    if entry == "*" or entry in EVENT_TYPES or entry in FAMILIES:
        return None
    return f"unknown event type {entry!r}: give `*`, a family ({', '.join(FAMILIES)}) or a type such as job.failed"


def matches(subscriptions: Iterable[str], event_type: str, details: Mapping[str, Any] | None = None) -> bool:
    """Does a webhook subscribed to `subscriptions` take this event? The failure of a delivery job is never
    delivered (a receiver that is down would otherwise be sent news of its own failures, forever)."""
    if event_type == "job.failed" and (details or {}).get("kind") == DELIVER_KIND:
        return False
    family = event_type.split(".")[0]
    return any(s in ("*", event_type, family) for s in subscriptions)


# -- the URL ---------------------------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's: http(s), a host, no credentials, no fragment, bounded length."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@): the receiver checks the signature instead"
    if parts.fragment or url.endswith("#"):
        return "must not have a #fragment"
    if port == 0:
        return "port must be 1..65535"
    return None


def display_url(url: str) -> str:
    """The URL as the API shows it: scheme, host and port only. Its path and query are often the credential
    (a Slack URL's path is), so they never come back."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return origin + ("/…" if parts.path not in ("", "/") or parts.query else "/")


def default_name(url: str) -> str:
    """A webhook's name when none is given: its host, as a DNS label (`hooks.slack.com` -> hooks-slack-com)."""
    host = (urlsplit(url).hostname or "webhook").lower()
    label = re.sub(r"[^a-z0-9]+", "-", host).strip("-")[:63].strip("-")
    return label or "webhook"


# -- payload and signature -------------------------------------------------------------------------------------


def payload(delivery: str, webhook: str, cluster: str, event: EventFacts, fmt: str = "json") -> bytes:
    """The body of a delivery: the same bytes on every attempt (the time is in the signature). At most
    MAX_BODY bytes: an event too large for it goes without its details, its message cut."""
    if fmt == "slack":
        return _dump({"text": slack_text(cluster, event)})
    body: dict[str, Any] = {
        "delivery": delivery,
        "webhook": webhook,
        "cluster": cluster,
        "type": event.type,
        "event": {
            "id": event.id,
            "type": event.type,
            "created_at": event.created_at.isoformat(),
            "app": event.app,
            "actor": event.actor,
            "message": event.message,
            "details": dict(event.details or {}),
        },
    }
    data = _dump(body)
    if len(data) > MAX_BODY:
        body["event"] = {**body["event"], "message": event.message[:MAX_TEXT], "details": {"truncated": True}}
        data = _dump(body)
    return data


def slack_text(cluster: str, event: EventFacts) -> str:
    """One line a person reads in a chat channel (Slack's and Mattermost's incoming webhooks take `text`)."""
    where = f" app {event.app}:" if event.app else ""
    text = f"[orchestry {cluster}] {event.type}:{where} {event.message}"
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _dump(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Orchestry-Signature` header's value."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = SIGNATURE_TOLERANCE) -> bool:
    """What a receiver does: the header's time is recent and one of its `v1` values signs `body`."""
    parts = [p.partition("=") for p in header.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    macs = [v.strip() for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].strip().isdigit() or not macs:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=")[1]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


# -- an attempt's outcome --------------------------------------------------------------------------------------

DeliveryStatus = Literal["delivered", "pending", "failed"]


@dataclass(frozen=True)
class Settled:
    """What one attempt leaves: `pending` retries after `retry_in` seconds; `failed` gives up."""

    status: DeliveryStatus
    reason: str | None = None
    retry_in: float | None = None


def retry_delay(attempt: int) -> float:
    """Seconds before the attempt after the `attempt`-th (counted from 1)."""
    return RETRY_SECONDS[min(max(attempt, 1), len(RETRY_SECONDS)) - 1]


def settle(status_code: int | None, error: str | None, attempt: int, max_attempts: int = MAX_ATTEMPTS) -> Settled:
    """The `attempt`-th POST answered `status_code` (None: no answer, `error` says why).

    2xx delivers. No answer, 408, 425, 429 and 5xx are the receiver's passing trouble: retried with backoff
    until the last attempt. A redirect (never followed: the URL is the operator's, not the receiver's to
    change) and any other 4xx give up at once: the same request would be refused again."""
    if status_code is not None and 200 <= status_code < 300:
        return Settled("delivered")
    if status_code is None:
        reason = error or "no answer"
        temporary = True
    elif 300 <= status_code < 400:
        reason, temporary = f"answered HTTP {status_code}: redirects are not followed (give the final URL)", False
    else:
        reason = f"answered HTTP {status_code}" + (f": {error}" if error else "")
        temporary = status_code >= 500 or status_code in (408, 425, 429)
    if not temporary:
        return Settled("failed", reason)
    if attempt >= max_attempts:
        return Settled("failed", f"gave up after {attempt} attempts: {reason}")
    return Settled("pending", reason, retry_delay(attempt))
