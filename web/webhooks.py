"""/api/v1/webhooks: notifications of events, POSTed to a URL, signed (workflows/webhooks.py says how).

Every operation needs the operator role. The URL is sealed at rest and shown as scheme://host[:port] only (a
Slack URL's path is its credential); the signing secret is returned once, in the answer that creates the
webhook. SSRF: a webhook's URL may name any address this controller reaches (loopback and internal networks
included). That is why only operators set them; a viewer token cannot add, list or test one.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Annotated, Literal

from flask import Blueprint, Response, jsonify
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.events import record
from orchestry.models.webhooks import (
    KEEP_DELIVERIES,
    Webhook,
    WebhookDelivery,
    count_webhooks,
    delete_webhook,
    deliveries,
    list_webhooks,
    set_enabled,
    webhook,
)
from orchestry.operations.webhooks import request_test_delivery
from orchestry.web.context import (
    actor,
    json_body,
    operator_only,
    query,
    secret_box,
    session,
    stored,
    wake_dispatcher,
)
from orchestry.web.errors import ApiError, field, not_found
from orchestry.web.jobs import job_out
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import ErrorOut, JobOut
from orchestry.workflows.webhooks import (
    EVENT_TYPES,
    FAMILIES,
    MAX_SUBSCRIPTIONS,
    MAX_URL,
    MAX_WEBHOOKS,
    NAME,
    default_name,
    display_url,
    subscription_problem,
    url_problem,
)

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks")
PATH_NAME = "<string(maxlength=63):name>"
SUBSCRIBABLE = ["*", *FAMILIES, *EVENT_TYPES]  # the document lists them: a client sees the catalogue


def _url(value: str) -> str:
    problem = url_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _subscription(value: str) -> str:
    problem = subscription_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Annotated[str, Field(max_length=MAX_URL), AfterValidator(_url)] = Field(
        description="http(s) URL the events are POSTed to; stored sealed, shown as scheme://host[:port] only"
    )
    events: list[
        Annotated[str, Field(max_length=48, json_schema_extra={"enum": SUBSCRIBABLE}), AfterValidator(_subscription)]
    ] = Field(
        min_length=1,
        max_length=MAX_SUBSCRIPTIONS,
        description="event types (job.failed), families (leader) or * for all",
    )
    name: str | None = Field(None, pattern=f"^{NAME}$", description="default: the URL's host as a DNS label")
    format: Literal["json", "slack"] = Field("json", description='json (signed payload) or slack ({"text": ...})')
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="the HMAC signing secret; default: a generated one"
    )


class Counts(BaseModel):
    delivered: int
    failed: int
    retried: int = Field(description="attempts that failed and were retried")
    dropped: int = Field(description="deliveries not sent: too many were waiting for this webhook")


class WebhookOut(BaseModel):
    name: str
    url: str = Field(description="scheme://host[:port] only: the path and query may be a credential")
    events: list[str]
    format: str
    enabled: bool
    counts: Counts
    created_at: datetime
    created_by: str


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret: shown this once, never again")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: int
    key: str = Field(description="the Orchestry-Delivery header: the same on every attempt")
    event_id: int | None
    event_type: str
    status: str = Field(description="pending | delivered | failed | dropped")
    attempts: int
    response_code: int | None
    error: str | None
    duration_ms: float | None
    job: str | None = Field(description="the job that sends it")
    created_at: datetime
    last_attempt_at: datetime | None
    finished_at: datetime | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=KEEP_DELIVERIES)


class StateChanged(WebhookOut):
    changed: bool = Field(description="false: it was in that state already (nothing done, no event)")
    dropped: int = Field(description="disable: the event deliveries that were waiting, dropped (not sent)")


class DeliveryAccepted(BaseModel):
    delivery: DeliveryOut
    job: JobOut
    url: str


def _out(row: Webhook) -> WebhookOut:
    return WebhookOut(
        name=row.name,
        url=row.url_display,
        events=list(row.events),
        format=row.format,
        enabled=row.enabled,
        counts=Counts(delivered=row.delivered, failed=row.failed, retried=row.retried, dropped=row.dropped),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        key=row.key,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempts=row.attempts,
        response_code=row.response_code,
        error=row.error,
        duration_ms=row.duration_ms,
        job=f"/api/v1/jobs/{row.job_id}" if row.job_id is not None else None,
        created_at=row.created_at,
        last_attempt_at=row.last_attempt_at,
        finished_at=row.finished_at,
    )


def _found(name: str) -> Webhook:
    row = webhook(session(), name) if re.fullmatch(NAME, name) else None
    if row is None:
        raise not_found("webhook", name)
    return row


@bp.get("")
@operation("Webhooks: URL (host only), events, format, delivery counts", tag="webhooks", responses={200: WebhookList})
def list_all() -> Response:
    operator_only("webhooks")
    return jsonify(WebhookList(webhooks=[_out(r) for r in list_webhooks(session())]).model_dump(mode="json"))


@bp.get(f"/{PATH_NAME}")
@operation("One webhook", tag="webhooks", responses={200: WebhookOut, 404: ErrorOut})
def show(name: str) -> Response:
    operator_only("webhooks")
    return jsonify(_out(_found(name)).model_dump(mode="json"))


@bp.post("")
@operation(
    "Add a webhook: events matching its subscriptions are POSTed to its URL, signed (Orchestry-Signature); "
    "201 with the signing secret, shown this once",
    tag="webhooks",
    body=Body(WebhookBody),
    responses={201: WebhookCreated, 403: ErrorOut, 409: ErrorOut, 415: ErrorOut, 422: ErrorOut, 503: ErrorOut},
)
def add() -> tuple[Response, int]:
    operator_only("webhooks")
    body = json_body(WebhookBody, required=True)
    name = body.name or default_name(body.url)
    db = session()
    if webhook(db, name) is not None:
        rule = f"webhook {name!r} exists: delete it first, or give another name"
        raise ApiError(409, "conflict", f"name: {rule}", [field("name", rule)])
    if count_webhooks(db) >= MAX_WEBHOOKS:
        raise ApiError(409, "conflict", f"at most {MAX_WEBHOOKS} webhooks; delete one first")
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    box = secret_box()
    sealed_url, sealed_secret = box.seal(body.url), box.seal(secret)
    row = Webhook(
        name=name,
        url_ciphertext=sealed_url,
        url_display=display_url(body.url),
        events=list(dict.fromkeys(body.events)),
        format=body.format,
        secret_ciphertext=sealed_secret,
        created_by=actor(),
    )
    db.add(row)
    db.flush()
    record(
        db,
        "webhook.added",
        f"webhook {name} added: {row.url_display} for {', '.join(row.events)}",
        actor=actor(),
        webhook=name,
    )
    db.commit()
    out = WebhookCreated(**_out(row).model_dump(), secret=secret)
    wake_dispatcher()
    return stored(out, f"/api/v1/webhooks/{name}", created=True)


@bp.delete(f"/{PATH_NAME}")
@operation(
    "Delete a webhook and its delivery history (deliveries waiting are not sent)",
    tag="webhooks",
    responses={204: "", 404: ErrorOut},
)
def remove(name: str) -> tuple[str, int]:
    operator_only("webhooks")
    db = session()
    delete_webhook(db, _found(name))
    record(db, "webhook.deleted", f"webhook {name} deleted", actor=actor(), webhook=name)
    db.commit()
    wake_dispatcher()
    return "", 204


def _switch(name: str, enabled: bool) -> Response:
    operator_only("webhooks")
    db = session()
    row = _found(name)
    dropped = set_enabled(db, row, enabled, utcnow())
    if dropped is not None:
        state = "enabled" if enabled else "disabled"
        note = f"; {dropped} waiting deliveries dropped" if dropped else ""
        record(db, f"webhook.{state}", f"webhook {name} {state}{note}", actor=actor(), webhook=name, dropped=dropped)
    db.commit()
    db.refresh(row)
    out = StateChanged(**_out(row).model_dump(), changed=dropped is not None, dropped=dropped or 0)
    return jsonify(out.model_dump(mode="json"))


@bp.post(f"/{PATH_NAME}/disable")
@operation(
    "Disable a webhook without deleting it: no new deliveries, and those waiting (retries included) are dropped; "
    "a test delivery is still sent. Its history and secret stay.",
    tag="webhooks",
    responses={200: StateChanged, 403: ErrorOut, 404: ErrorOut},
)
def disable(name: str) -> Response:
    return _switch(name, enabled=False)


@bp.post(f"/{PATH_NAME}/enable")
@operation(
    "Enable a disabled webhook: events recorded from now on are delivered (none of those in between)",
    tag="webhooks",
    responses={200: StateChanged, 403: ErrorOut, 404: ErrorOut},
)
def enable(name: str) -> Response:
    return _switch(name, enabled=True)


@bp.get(f"/{PATH_NAME}/deliveries")
@operation(
    "A webhook's deliveries, newest first: event, status, attempts, last answer, timings",
    tag="webhooks",
    query=DeliveriesQuery,
    responses={200: DeliveryList, 404: ErrorOut},
)
def history(name: str) -> Response:
    operator_only("webhooks")
    args = query(DeliveriesQuery)
    rows = deliveries(session(), _found(name).id, args.limit)
    return jsonify(DeliveryList(deliveries=[_delivery_out(r) for r in rows]).model_dump(mode="json"))


@bp.post(f"/{PATH_NAME}/test")
@operation(
    "Send a test delivery (type webhook.test) to this webhook now, whatever it subscribes to; 202 with the "
    "delivery and the job that sends it",
    tag="webhooks",
    responses={202: DeliveryAccepted, 404: ErrorOut, 409: ErrorOut},
)
def test(name: str) -> tuple[Response, int]:
    operator_only("webhooks")
    db = session()
    row = request_test_delivery(db, _found(name))
    if row.status == "dropped":
        db.commit()
        raise ApiError(409, "conflict", f"webhook {name} has too many deliveries waiting; the test was dropped")
    db.commit()
    job = db.get(jobq.Job, row.job_id)
    assert job is not None
    out = job_out(job)
    resp = jsonify(DeliveryAccepted(delivery=_delivery_out(row), job=out, url=out.url).model_dump(mode="json"))
    resp.headers["Location"] = out.url
    wake_dispatcher()
    return resp, 202
