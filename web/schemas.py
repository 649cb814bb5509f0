"""What the API answers and the query strings it takes, as pydantic models.

The handlers build their answers from these models and the OpenAPI document is generated from them, so
the two cannot drift apart.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from orchestry.models.jobs import JOB_KINDS
from orchestry.spec.whole import integral

_RELATIVE = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _parse_since(value: Any) -> Any:
    """`since` is an ISO 8601 time or a duration back from now (`90s`, `15m`, `2h`, `7d`)."""
    if not isinstance(value, str):
        return value
    match = _RELATIVE.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 time or a duration like 15m, 2h, 7d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_bool(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("must be true or false")
    return value


def _parse_int(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(r"-?\d{1,12}", value.strip()):
        raise ValueError("must be an integer")
    return int(value) if isinstance(value, str) else value


QueryBool = Annotated[bool, BeforeValidator(_parse_bool)]
QueryInt = Annotated[int, BeforeValidator(_parse_int)]
Since = Annotated[datetime, BeforeValidator(_parse_since)]


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictQuery(Query):
    strict: QueryBool = Field(False, description="refuse fields the spec format does not know")
    dry_run: QueryBool = Field(
        False, description="store nothing: answer what would change (revision, fields, replicas to replace)"
    )


class DiffQuery(Query):
    from_: Annotated[int, Field(ge=1), BeforeValidator(_parse_int)] | None = Field(
        None, alias="from", description="the revision to compare from (default: the one before `to`)"
    )
    to: Annotated[int, Field(ge=1), BeforeValidator(_parse_int)] | None = Field(
        None, description="the revision to compare to (default: the current one)"
    )


class SpecQuery(Query):
    raw: QueryBool = Field(False, description="the document exactly as submitted")
    revision: Annotated[int, Field(ge=1), BeforeValidator(_parse_int)] | None = Field(
        None, description="a past revision (default: the current one)"
    )


class DeleteQuery(Query):
    force: QueryBool = Field(False, description="kill the replicas at once instead of stopping them gracefully")
    volumes: QueryBool = Field(False, description="remove the app's volumes too (kept, and listed, without it)")


class EventsQuery(Query):
    type: str | None = Field(
        None, max_length=48, pattern=r"^[a-z0-9_.-]+$", description="event type, or a dotted prefix of one (`app`)"
    )
    since: Since | None = Field(None, description="ISO 8601 time or a duration back from now (15m, 2h)")
    limit: QueryInt = Field(100, ge=1, le=1000)


class ErrorOut(BaseModel):
    error: str = Field(description="a stable, machine-readable code")
    detail: str = Field(description="what went wrong, for a person")
    fields: list[dict[str, Any]] = Field(description="one entry per offending field: field, rule, message")


class FieldIssueOut(BaseModel):
    field: str
    rule: str
    message: str
    document: int = 0


class ChangeOut(BaseModel):
    path: str = Field(description="the field's path, as in errors (`spec.ports[0].containerPort`)")
    kind: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None


class RegisterResult(BaseModel):
    app: str
    action: Literal["created", "revised", "unchanged"]
    revision: int
    content_hash: str
    message: str
    warnings: list[FieldIssueOut]
    job: int | None = Field(None, description="the rollout job, when a running app got a new revision")
    dry_run: bool = Field(default=False, description="nothing was stored: what registering would do")
    changes: list[ChangeOut] | None = Field(default=None, description="dry run: the fields that would change")
    replace: list[str] | None = Field(default=None, description="dry run: the replicas the rollout would replace")


class DiffOut(BaseModel):
    app: str
    from_revision: int
    to_revision: int
    same_spec: bool
    changes: list[ChangeOut]
    replace: list[str] = Field(description="replicas a rollout from the running spec to `to` would replace")


class RegisterResponse(BaseModel):
    results: list[RegisterResult] = Field(description="one per document, in order; each with its warnings")


class ReplicaOut(BaseModel):
    name: str
    slot: int
    revision: int
    container_id: str | None
    address: str | None
    host: str | None = Field(
        description="the Swarm host it runs on (runtime swarm, as `orchestry hosts` names it); null on the docker "
        "runtime (this node's Docker engine) or while a task waits for a host"
    )
    state: str
    health: str
    consecutive_failures: int
    consecutive_successes: int
    last_check_at: datetime | None
    last_error: str | None
    started_at: datetime | None


class AppSummary(BaseModel):
    name: str
    status: str
    type: str
    image: str
    revision: int
    desired_replicas: int
    replica_count: int
    mode: str
    updated_at: datetime


class AppDetail(AppSummary):
    status_reason: str | None
    content_hash: str
    labels: dict[str, str]
    min_replicas: int
    max_replicas: int
    last_scaling: str | None = Field(
        None, description="the autoscaler's last change: when, from, to and why (see .../scaling/history)"
    )
    created_at: datetime
    replicas: list[ReplicaOut]


class AppList(BaseModel):
    apps: list[AppSummary]


class SpecOut(BaseModel):
    app: str
    revision: int
    content_hash: str
    spec: dict[str, Any]


class RevisionOut(BaseModel):
    number: int
    content_hash: str
    current: bool
    created_at: datetime
    created_by: str
    warnings: list[str]
    restored_from: int | None = Field(default=None, description="the revision a rollback restored")


class RevisionList(BaseModel):
    app: str
    revisions: list[RevisionOut]


class DeleteResult(BaseModel):
    app: str
    deleted: bool
    message: str


class EventOut(BaseModel):
    id: int
    created_at: datetime
    type: str
    app: str | None
    actor: str
    message: str
    details: dict[str, Any]


class EventList(BaseModel):
    events: list[EventOut]


class ComponentOut(BaseModel):
    state: Literal["up", "down", "unknown", "off"]
    for_seconds: float | None = Field(None, description="how long it has been in this state, as this node saw it")
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok; degraded (200): a component other than the database is down; unavailable (503): the "
        "database cannot be read or written"
    )
    version: str
    node: str
    database: str = Field(description="ok, unreachable (reads fail) or read-only (reads work, writes fail)")
    database_read: Literal["ok", "failed"]
    database_write: Literal["ok", "failed", "not tried"]
    components: dict[str, ComponentOut] = Field(default_factory=dict)


def validation_fields(exc: ValidationError) -> list[dict[str, Any]]:
    """Turn pydantic's errors on a query string into our `fields` entries."""
    out = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "<query>"
        if err["type"] == "extra_forbidden":
            rule = "unknown parameter"
        elif err["type"] == "value_error":
            rule = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        else:
            rule = err["msg"][0].lower() + err["msg"][1:]
        out.append({"field": path, "rule": rule, "message": f"{path}: {rule}"})
    return out


class StrictBody(BaseModel):
    """A JSON request body: unknown keys refused, no `false` -> 0 or "5" -> 5, but `5.0` is the integer 5
    (as JSON Schema's `integer` says)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral(cls, data: Any) -> Any:
        return integral(cls, data)


class ReplicasBody(StrictBody):
    """Body of `scale` (required) and `up` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    replicas: int = Field(
        ge=0, description="replica count, minReplicas..maxReplicas of the policy in force (and the configured cap)"
    )


class RollbackBody(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)
    to: int | None = Field(None, ge=1, description="the revision to restore (default: the previous one)")


class UpBody(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)
    replicas: int | None = Field(None, ge=1, description="default: the app's minReplicas (at least 1)")


def _job_kind(value: Any) -> Any:
    if isinstance(value, str) and value not in JOB_KINDS:
        raise ValueError(f"must be one of {', '.join(JOB_KINDS)}")
    return value


class JobsQuery(Query):
    app: str | None = Field(None, max_length=63)
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    # the enum on the string branch: beside `null` (the default), not around both (an invalid document)
    kind: (
        Annotated[str, BeforeValidator(_job_kind), WithJsonSchema({"type": "string", "enum": list(JOB_KINDS)})] | None
    ) = Field(None, description="only jobs of this kind")
    limit: QueryInt = Field(50, ge=1, le=1000)


class JobOut(BaseModel):
    id: int
    kind: str
    app: str | None
    status: str
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    steps: list[dict[str, Any]]
    history: list[dict[str, Any]] = Field(default_factory=list, description="ended attempts, with reasons")
    result: dict[str, Any] | None
    error: str | None
    owner: str | None
    term: int | None
    created_by: str
    created_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str


class JobList(BaseModel):
    jobs: list[JobOut]


class Accepted(BaseModel):
    """202: the request is stored as a job; follow it at `url`."""

    job: JobOut
    url: str
    created: bool = Field(description="false when an existing job answers (same idempotency key, or joined)")
    message: str


class LogsQuery(Query):
    lines: QueryInt = Field(100, ge=0, le=10000, description="lines per replica from the end")
    follow: QueryBool = Field(False, description="keep the response open and stream new lines")


class ReplicaHealthOut(BaseModel):
    name: str
    state: str = Field(description="the container's state")
    health: str = Field(description="unknown (not yet proven), healthy (in rotation) or unhealthy")
    in_rotation: bool
    draining: bool
    last_check_at: datetime | None
    last_latency_ms: float | None
    consecutive_successes: int
    consecutive_failures: int
    last_error: str | None


class AppHealth(BaseModel):
    app: str
    check: dict[str, Any] | None = Field(description="the app's healthCheck; null when it has none")
    healthy: int
    replicas: list[ReplicaHealthOut]


class NodeOut(BaseModel):
    node_id: str
    address: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    leader: bool
    alive: bool = Field(description="heartbeat within three lease periods")
    routes_generation: int | None = Field(description="the routing table this node's nginx serves, as it reported")
    routes_reported_at: datetime | None = Field(description="when it last reported what its nginx serves")


class HostOut(BaseModel):
    name: str = Field(description="the host's name (its hostname)")
    id: str = Field(description="its Swarm node id")
    address: str = Field(description="where its replicas' published ports are reached")
    state: str = Field(description="Swarm's view: ready, down, unknown, disconnected")
    availability: str = Field(description="active, pause or drain")
    role: str = Field(description="manager or worker")
    leader: bool = Field(description="the Swarm manager that leads the Raft group")
    labels: dict[str, str]
    replicas: int = Field(description="this installation's replicas running there")
    apps: dict[str, int] = Field(description="replicas running there, by app")


class HostsOut(BaseModel):
    runtime: Literal["swarm"]
    hosts: list[HostOut]


class LeaderOut(BaseModel):
    leader: str | None = Field(description="the node holding an unexpired lease; null while nobody leads")
    term: int
    expires_at: datetime | None
    address: str | None


class ClusterStatus(BaseModel):
    node: str = Field(description="the node that answered")
    is_leader: bool
    leader: LeaderOut
    nodes: list[NodeOut]


class ClusterHealth(BaseModel):
    status: Literal["ok", "degraded"]
    node: str
    has_leader: bool
    database: str
