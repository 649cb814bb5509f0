"""/api/v1/apps/<name>/scaling: the policy in force (GET, PUT), the decisions taken (history), and what the
autoscaler would decide for supplied metrics (evaluate, which acts on nothing)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ConfigDict, Field

from orchestry.models.apps import App, get_revision
from orchestry.models.cluster import db_now
from orchestry.models.events import record
from orchestry.models.scaling import (
    ScalingDecisionRow,
    decision_fields,
    decisions,
    history_for,
    policy_source,
    replica_states,
    scaling_section,
)
from orchestry.spec import validate_document
from orchestry.spec.model import Scaling
from orchestry.web.context import actor, app_or_404, ctx, json_object, query, session, validated
from orchestry.web.errors import ApiError, field
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import ErrorOut, Query, QueryBool, QueryInt, StrictBody
from orchestry.workflows.revision import policy_in_force
from orchestry.workflows.scaling import (
    BURST_WINDOW_SECONDS,
    NO_HISTORY,
    MetricWindow,
    ReplicaSample,
    ReplicaState,
    ScaleDecision,
    decide_scale,
)

bp = Blueprint("scaling", __name__, url_prefix="/api/v1/apps")
NAME = "<string(maxlength=253):name>"
# evaluate builds one replica per `current`: bounded by the policy's maxReplicas (checked per request), and
# by this in the schema, whatever the cap is configured to
EVALUATE_MAX = 10_000


class PolicyBody(Scaling):
    """A `scaling` section as in a spec (../shared/app-spec.md): mode, minReplicas, maxReplicas, targets,
    thresholds, windows; absent fields take the spec's defaults, unknown ones are refused. Used for the
    document: the handler validates the section as the spec's (every rule, with the app's revision)."""

    model_config = ConfigDict(**{**Scaling.model_config, "extra": "forbid"})


class PolicyOut(BaseModel):
    app: str
    source: str = Field(description="`spec`: the revision's scaling section; `api`: set with PUT")
    policy: dict[str, Any] = Field(description="the scaling section in force, every field filled in")
    desired_replicas: int
    max_replicas_cap: int = Field(description="the cluster's cap (setting max_replicas), which also binds")


class DecisionOut(BaseModel):
    id: int | None = None
    at: datetime
    current: int
    target: int
    recommended: int
    direction: str
    changed: bool
    burst: bool
    governing: str | None
    reason: str
    ratios: dict[str, float | None]
    metrics: dict[str, Any]
    job_id: int | None = None


class HistoryOut(BaseModel):
    app: str
    decisions: list[DecisionOut]


class HistoryQuery(Query):
    limit: QueryInt = Field(50, ge=1, le=1000)
    all: QueryBool = Field(False, description="also the evaluations that changed nothing (kept for an hour)")


class SuppliedMetrics(BaseModel):
    """Per-replica figures are applied to every ready replica; app figures are what nginx saw in total."""

    model_config = ConfigDict(extra="forbid", strict=True)
    rps: float | None = Field(None, ge=0, description="requests per second, the whole app")
    p95_ms: float | None = Field(None, ge=0)
    active_connections: float | None = Field(None, ge=0, description="open connections, the whole app")
    cpu_percent: float | None = Field(None, ge=0, description="per replica, of its CPU limit")
    memory_percent: float | None = Field(None, ge=0, description="per replica, of its memory limit")


class EvaluateBody(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)
    metrics: SuppliedMetrics
    burst: SuppliedMetrics | None = Field(None, description=f"the last {BURST_WINDOW_SECONDS:g} s, if different")
    current: int | None = Field(
        None, ge=0, le=EVALUATE_MAX, description="default: the app's desired replicas; at most its maxReplicas"
    )
    ready: int | None = Field(None, ge=0, le=EVALUATE_MAX, description="ready replicas; default: as many as `current`")
    policy: PolicyBody | None = Field(None, description="a scaling section to try instead of the one in force")
    use_history: bool = Field(False, description="apply the stored cooldown and stabilization window")


class EvaluateOut(BaseModel):
    app: str
    decision: DecisionOut
    acted: bool = Field(False, description="always false: evaluate never changes anything")


def _policy_out(app: App) -> PolicyOut:
    db = session()
    return PolicyOut(
        app=app.name,
        source=policy_source(app),
        policy=scaling_section(db, app),
        desired_replicas=app.desired_replicas,
        max_replicas_cap=ctx().settings.max_replicas,
    )


@bp.get(f"/{NAME}/scaling")
@operation(
    "The scaling policy in force and where it comes from", tag="scaling", responses={200: PolicyOut, 404: ErrorOut}
)
def show(name: str) -> Response:
    return jsonify(policy_out(name).model_dump(mode="json"))


def policy_out(name: str) -> PolicyOut:
    return _policy_out(app_or_404(name))


def validated_section(app: App, section: dict[str, Any]) -> dict[str, Any]:
    """`section` as the app's scaling section, validated as the spec's is (every rule, unknown fields
    refused), normalised with every default filled in; ApiError 422 naming each field otherwise."""
    revision = get_revision(session(), app)
    document = {**(revision.spec if revision else {}), "scaling": section}
    loaded, errors, _ = validate_document(document, max_replicas=ctx().settings.max_replicas, strict=True)
    if loaded is None:
        fields = [field(e.path, e.rule) for e in errors]
        raise ApiError(422, "invalid_policy", "; ".join(f["message"] for f in fields), fields)
    result: dict[str, Any] = loaded.normalized["scaling"]
    return result


@bp.put(f"/{NAME}/scaling")
@operation(
    "Replace the scaling policy (the spec's `scaling` section, in its field names); validated, stored, and "
    "used from the next evaluation. A new revision whose own scaling section differs replaces it again.",
    tag="scaling",
    body=Body(PolicyBody, description='a `scaling` section, e.g. {"mode": "auto", "maxReplicas": 8}'),
    responses={200: PolicyOut, 400: ErrorOut, 404: ErrorOut, 415: ErrorOut, 422: ErrorOut},
)
def replace(name: str) -> Response:
    body = json_object(required=True) or {}
    return jsonify(set_policy(name, body).model_dump(mode="json"))


def set_policy(name: str, body: dict[str, Any]) -> PolicyOut:
    """Validate `body` as the app's scaling section, store it and record the change (422 naming a field)."""
    app = app_or_404(name)
    if app.status == "deleting":
        raise ApiError(409, "conflict", f"app {name} is being deleted")
    db = session()
    before = scaling_section(db, app)
    policy = validated_section(app, body)
    app.scaling_policy = policy
    changed = {k: [before.get(k), v] for k, v in policy.items() if before.get(k) != v}
    summary = ", ".join(f"{k} {old} → {new}" for k, (old, new) in changed.items()) or "no field changed"
    record(
        db, "scaling.policy", f"{name}: scaling policy set ({summary})", actor=actor(), app_name=name, changed=changed
    )
    db.commit()
    return _policy_out(app)


def _decision_out(row: ScalingDecisionRow) -> DecisionOut:
    return DecisionOut(
        id=row.id,
        at=row.created_at,
        current=row.current,
        target=row.target,
        recommended=row.recommended,
        direction=row.direction,
        changed=row.changed,
        burst=row.burst,
        governing=row.governing,
        reason=row.reason,
        ratios=row.ratios,
        metrics=row.metrics,
        job_id=row.job_id,
    )


@bp.get(f"/{NAME}/scaling/history")
@operation(
    "The autoscaler's decisions, newest first: those that changed the replica count (all=true: every one), "
    "each with the metrics it saw and its reason",
    tag="scaling",
    query=HistoryQuery,
    responses={200: HistoryOut, 400: ErrorOut, 404: ErrorOut},
)
def history(name: str) -> Response:
    args = query(HistoryQuery)
    return jsonify(decision_history(name, args.limit, changes_only=not args.all).model_dump(mode="json"))


def decision_history(name: str, limit: int = 50, *, changes_only: bool = True) -> HistoryOut:
    """The autoscaler's decisions, newest first (404 when the app does not exist)."""
    app = app_or_404(name)
    rows = decisions(session(), app.id, limit=limit, changes_only=changes_only)
    return HistoryOut(app=name, decisions=[_decision_out(r) for r in rows])


def _window(metrics: SuppliedMetrics, ready: list[str], span: float) -> MetricWindow:
    sample = ReplicaSample(cpu_percent=metrics.cpu_percent, memory_percent=metrics.memory_percent)
    return MetricWindow(
        span_seconds=span,
        replicas={name: sample for name in ready},
        rps=metrics.rps,
        p95_ms=metrics.p95_ms,
        active_connections=metrics.active_connections,
    )


@bp.post(f"/{NAME}/scaling/evaluate")
@operation(
    "What the autoscaler would decide for the supplied metrics, with the policy in force (or one supplied); "
    "changes nothing",
    tag="scaling",
    body=Body(EvaluateBody),
    responses={200: EvaluateOut, 400: ErrorOut, 404: ErrorOut, 415: ErrorOut, 422: ErrorOut},
)
def evaluate(name: str) -> Response:
    data = json_object(required=True) or {}
    # The policy is validated as the spec's section (errors name `scaling.<field>`, every rule applies);
    # the model only documents it.
    raw_policy = data.get("policy")
    body = validated(EvaluateBody, {**data, "policy": None} if isinstance(raw_policy, dict) else data)
    app = app_or_404(name)
    db = session()
    cap = ctx().settings.max_replicas
    section = validated_section(app, raw_policy) if isinstance(raw_policy, dict) else scaling_section(db, app)
    policy = policy_in_force(section, cap)
    current = app.desired_replicas if body.current is None else body.current
    if body.current is not None and body.current > policy.max_replicas:
        why = f"must be <= {policy.max_replicas}, the maxReplicas of the policy evaluated (within the cap {cap})"
        raise ApiError(422, "invalid", f"current: {why}", [field("current", why)])
    if body.ready is None and body.current is None:
        replicas = list(replica_states(db, app))
    else:
        ready = current if body.ready is None else min(body.ready, current)
        replicas = [ReplicaState(f"replica-{i}", i <= ready) for i in range(1, current + 1)]
    ready_names = [r.name for r in replicas if r.ready]
    now = db_now(db) if body.use_history else datetime.now(UTC)
    history_ = history_for(db, app.id, now, policy.stabilization_window_seconds) if body.use_history else NO_HISTORY
    window = _window(body.metrics, ready_names, policy.window_seconds)
    burst = _window(body.burst or body.metrics, ready_names, policy.burst_window_seconds)
    decision = decide_scale(window, policy, current, replicas, now, history_, burst)
    out = EvaluateOut(app=name, decision=_evaluated(decision, now, window), acted=False)
    return jsonify(out.model_dump(mode="json"))


def _evaluated(decision: ScaleDecision, now: datetime, window: MetricWindow) -> DecisionOut:
    return DecisionOut(
        at=now, changed=False, metrics={"window": dataclasses.asdict(window)}, **decision_fields(decision)
    )
