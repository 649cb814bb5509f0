"""/api/v1/apps: register specs, read apps, their specs and revisions, delete them."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy.exc import IntegrityError

from orchestry.models.apps import App, AppLine, AppRevision, app_lines, current_specs, get_revision
from orchestry.models.edge import bump_edge, lock_edge
from orchestry.models.replicas import Replica, replica_counts, replicas_of
from orchestry.models.scaling import ScalingDecisionRow, decisions, section_in_force
from orchestry.operations.registration import Submission, register, registration_plan
from orchestry.spec import AppSpec, SpecParseError, SpecTooLarge, UnsupportedMediaType, load_specs
from orchestry.spec.redact import redact_env, redact_raw
from orchestry.web.context import actor, app_or_404, ctx, query, session, wake_dispatcher
from orchestry.web.errors import ApiError, field, not_found
from orchestry.web.openapi import Body, operation
from orchestry.web.schemas import (
    AppDetail,
    AppList,
    AppSummary,
    ChangeOut,
    DiffOut,
    DiffQuery,
    ErrorOut,
    FieldIssueOut,
    RegisterResponse,
    RegisterResult,
    ReplicaOut,
    RevisionList,
    RevisionOut,
    SpecOut,
    SpecQuery,
    StrictQuery,
)
from orchestry.workflows.converge import RUNNING_STATUSES
from orchestry.workflows.public_routes import find_conflicts
from orchestry.workflows.revision import DEFAULT_TYPE, revision_view
from orchestry.workflows.rollout import Change, ReplicaRef, change_plan, diff_specs
from orchestry.workflows.wake import shown_status

bp = Blueprint("apps", __name__, url_prefix="/api/v1/apps")
NAME = "<string(maxlength=253):name>"
APP = "<app:name>"  # `/apps/<name>` without `/apps/register`


def _issue(issue: Any) -> dict[str, Any]:
    return FieldIssueOut(field=issue.path, rule=issue.rule, message=issue.message, document=issue.document).model_dump()


@bp.post("")
@bp.post("/register")
@operation(
    "Register one or more app specs",
    tag="apps",
    body=Body(
        AppSpec,
        ("application/yaml", "application/json"),
        "One app spec (YAML or JSON), or several YAML documents separated by `---`.",
    ),
    query=StrictQuery,
    responses={
        201: RegisterResponse,
        200: RegisterResponse,
        409: ErrorOut,
        413: ErrorOut,
        415: ErrorOut,
        422: ErrorOut,
    },
    description="201 when an app was created; 200 when every app was revised or left unchanged. "
    "Unknown fields come back as warnings (or refuse the spec with `strict=true`). With `dry_run=true` "
    "nothing is stored: each result says what would happen, the fields that would change and the replicas "
    "the rollout would replace (200).",
)
def register_apps() -> tuple[Response, int]:
    args = query(StrictQuery)
    body = request.get_data(cache=False)
    try:
        loaded = load_specs(
            body,
            request.mimetype or None,
            max_replicas=ctx().settings.max_replicas,
            strict=args.strict,
            placement=ctx().settings.runtime == "swarm",
        )
    except UnsupportedMediaType as exc:
        raise ApiError(415, "unsupported_media_type", str(exc)) from None
    except SpecTooLarge as exc:
        raise ApiError(413, "payload_too_large", str(exc)) from None
    except SpecParseError as exc:
        raise ApiError(400, "malformed_spec", str(exc)) from None
    if not loaded.ok:
        fields = [_issue(e) for e in loaded.errors]
        detail = "; ".join(f["message"] for f in fields[:5]) + (" ..." if len(fields) > 5 else "")
        raise ApiError(422, "invalid_spec", detail, fields)

    raw_format = "json" if request.mimetype == "application/json" else "yaml"
    subs = [
        Submission(s.spec.metadata.name, s.normalized, s.content_hash, tuple(w.message for w in s.warnings))
        for s in loaded.specs
    ]
    raws = [s.raw for s in loaded.specs]  # each app keeps its own document's text, not the whole body
    db = session()
    if args.dry_run:
        _refuse_route_conflicts(db, loaded.specs, lock=False)  # the same 409 as registering, nothing held
        dry = [_dry_run(sub, spec.warnings) for sub, spec in zip(subs, loaded.specs, strict=True)]
        db.rollback()
        return jsonify(RegisterResponse(results=dry).model_dump(mode="json")), 200
    for attempt in (1, 2):  # a concurrent first registration of the same name loses the race once
        try:
            _refuse_route_conflicts(db, loaded.specs)
            done = [
                register(db, sub, raw=raw, raw_format=raw_format, actor=actor())
                for sub, raw in zip(subs, raws, strict=True)
            ]
            plans = [d.plan for d in done]
            if any(p.action == "refused" for p in plans):
                db.rollback()
            else:
                if any(p.action in ("created", "revised") for p in plans):
                    bump_edge(db)  # every node's nginx takes the new routes (controller/edge.py)
                db.commit()
            break
        except IntegrityError:
            db.rollback()
            if attempt == 2:
                raise ApiError(409, "conflict", "the app was registered concurrently; retry") from None
    refused = [p.message for p in plans if p.action == "refused"]
    if refused:
        raise ApiError(409, "conflict", "; ".join(refused))
    results = [
        RegisterResult(
            app=sub.name,
            action=d.plan.action,  # type: ignore[arg-type]
            revision=d.plan.revision,
            content_hash=sub.content_hash,
            message=d.plan.message,
            warnings=[FieldIssueOut(**_issue(w)) for w in spec.warnings],
            job=d.job_id,
        )
        for sub, d, spec in zip(subs, done, loaded.specs, strict=True)
    ]
    if any(d.job_id for d in done):
        wake_dispatcher()
    out = RegisterResponse(results=results)
    resp = jsonify(out.model_dump(mode="json"))
    created = [r.app for r in results if r.action == "created"]
    if created:
        resp.headers["Location"] = f"/api/v1/apps/{created[0]}"  # the first app this request created
    return resp, 201 if created else 200


def _refuse_route_conflicts(db: Any, specs: Any, *, lock: bool = True) -> None:
    """Two apps never claim the same host and path: 409 naming the other app and the field. The edge row
    is locked first, so two registrations cannot both pass (on PostgreSQL; SQLite has one writer); a dry run
    (`lock=False`) reads without locking: it stores nothing, and a registration checks again."""
    if lock:
        lock_edge(db)
    current: dict[str, Any] = current_specs(db)
    domain = ctx().settings.domain
    fields: list[dict[str, Any]] = []
    for index, loaded in enumerate(specs):
        name = loaded.spec.metadata.name
        for conflict in find_conflicts(name, loaded.normalized, current, domain):
            fields.append(
                {
                    "field": conflict.field,
                    "rule": f"conflicts with app {conflict.other_app}",
                    "message": f"{conflict.field}: {conflict.message}",
                    "document": index,
                    "app": conflict.other_app,
                }
            )
        current[name] = loaded.normalized  # later documents of this request conflict with it too
    if fields:
        db.rollback()
        detail = "; ".join(str(f["message"]) for f in fields[:5])
        raise ApiError(409, "route_conflict", detail, fields)


def _changes(changes: tuple[Change, ...]) -> list[ChangeOut]:
    return [ChangeOut(path=c.path, kind=c.kind, before=c.before, after=c.after) for c in changes]  # type: ignore[arg-type]


def _replicas_to_replace(app: App, new_hash: str) -> list[str]:
    """The app's replicas a rollout to a spec of `new_hash` would replace (each replica's hash: its revision's)."""
    hashes = {r.number: r.content_hash for r in app.revisions}
    refs = [ReplicaRef(r.name, hashes.get(r.revision, "")) for r in replicas_of(session(), app.id)]
    return list(change_plan(new_hash, refs, running=app.status in RUNNING_STATUSES).replace)


def _dry_run(sub: Submission, warnings: Any) -> RegisterResult:
    """What registering `sub` would do, read only: the same plan as `register`, the fields that change and
    the replicas the rollout would replace."""
    app, current, plan = registration_plan(session(), sub)
    if plan.action == "refused":
        raise ApiError(409, "conflict", plan.message)
    changes = _changes(diff_specs(current.spec, sub.normalized)) if current is not None else []
    replace = _replicas_to_replace(app, sub.content_hash) if app is not None and plan.action == "revised" else []
    what = {
        "created": f"app {sub.name} would be created (revision 1)",
        "revised": f"app {sub.name} would get revision {plan.revision}: {len(changes)} field(s) change; "
        + (f"{len(replace)} replica(s) to replace one at a time" if replace else "no replica to replace"),
        "unchanged": plan.message,
    }[plan.action]
    return RegisterResult(
        app=sub.name,
        action=plan.action,
        revision=plan.revision,
        content_hash=sub.content_hash,
        message=f"dry run: {what}",
        job=None,
        warnings=[FieldIssueOut(**_issue(w)) for w in warnings],
        dry_run=True,
        changes=changes,
        replace=replace,
    )


def _summary_fields(app: App, rev: AppRevision | None, replica_count: int) -> dict[str, Any]:
    spec = rev.spec if rev else {}
    scaling = section_in_force(app, spec)
    view = revision_view(spec)
    return {
        "name": app.name,
        "status": shown_status(app.status, app.desired_replicas, scaling),
        "type": view.type or DEFAULT_TYPE,
        "image": view.image,
        "revision": app.revision,
        "desired_replicas": app.desired_replicas,
        "replica_count": replica_count,
        "mode": scaling.get("mode", "auto"),
        "updated_at": app.updated_at,
    }


def _line_summary(line: AppLine, replica_count: int) -> AppSummary:
    """As `_summary_fields`, from a list's line (the policy in force: the API's, else the spec's)."""
    if line.scaling_policy is not None:
        section = dict(line.scaling_policy)
    else:
        section = {
            "mode": line.spec_mode or "auto",
            "minReplicas": 1 if line.spec_min_replicas is None else line.spec_min_replicas,
        }
    return AppSummary(
        name=line.name,
        status=shown_status(line.status, line.desired_replicas, section),
        type=line.type or "http",
        image=line.image or "",
        revision=line.revision,
        desired_replicas=line.desired_replicas,
        replica_count=replica_count,
        mode=section.get("mode") or "auto",
        updated_at=line.updated_at,
    )


def _scaling_line(row: ScalingDecisionRow) -> str:
    return f"{row.created_at.isoformat()}: {row.current} → {row.target}: {row.reason}"


@bp.get("")
@operation("List apps", tag="apps", responses={200: AppList})
def list_all() -> Response:
    # Serialised by pydantic-core in one pass (the same JSON as jsonify of model_dump, at a fraction of the
    # cost: 1,000 apps are one answer's worth of work, not 1,000 dicts built and encoded again).
    return Response(app_list().model_dump_json() + "\n", mimetype="application/json")


def app_list() -> AppList:
    """Every app as the list shows it (the API's list and the dashboard's table)."""
    db = session()
    counts = replica_counts(db)
    return AppList(apps=[_line_summary(line, counts.get(line.id, 0)) for line in app_lines(db)])


def _replica_out(r: Replica) -> ReplicaOut:
    return ReplicaOut(
        name=r.name,
        slot=r.slot,
        revision=r.revision,
        container_id=r.container_id,
        address=r.address,
        host=r.host_name,
        state=r.state,
        health=r.health,
        consecutive_failures=r.consecutive_failures,
        consecutive_successes=r.consecutive_successes,
        last_check_at=r.last_check_at,
        last_error=r.last_error,
        started_at=r.started_at,
    )


@bp.get(f"/{APP}")
@operation("An app: desired state, revision, replicas, status", tag="apps", responses={200: AppDetail, 404: ErrorOut})
def show(name: str) -> Response:
    return jsonify(app_detail(name).model_dump(mode="json"))


def app_detail(name: str) -> AppDetail:
    """One app: desired state, revision, replicas, status (404 when there is none)."""
    db = session()
    app = app_or_404(name)
    rev = get_revision(db, app)
    replicas = replicas_of(db, app.id)
    spec = rev.spec if rev else {}
    scaling = section_in_force(app, spec)
    last = decisions(db, app.id, limit=1)
    detail = AppDetail(
        **_summary_fields(app, rev, len(replicas)),
        status_reason=app.status_reason,
        content_hash=rev.content_hash if rev else "",
        labels=spec.get("metadata", {}).get("labels", {}) or {},
        min_replicas=scaling.get("minReplicas", 1),
        max_replicas=scaling.get("maxReplicas", 5),
        last_scaling=_scaling_line(last[0]) if last else None,
        created_at=app.created_at,
        replicas=[_replica_out(r) for r in replicas],
    )
    return detail


@bp.get(f"/{NAME}/spec")
@operation(
    "An app's spec (normalised, or `raw=true`: exactly as submitted)",
    tag="apps",
    query=SpecQuery,
    responses={200: SpecOut, 404: ErrorOut},
    also={  # raw=true: the document exactly as submitted, YAML or JSON
        200: {
            "application/yaml": {"type": "string"},
            "application/json": {"type": "object", "description": "raw=true: a JSON spec as submitted"},
        }
    },
)
def spec(name: str) -> Response:
    args = query(SpecQuery)
    app = app_or_404(name)
    rev = get_revision(session(), app, args.revision)
    if rev is None:
        raise not_found(f"revision of app {name}", str(args.revision))
    viewer = g.get("role", "operator") != "operator"  # env values are redacted for viewers
    if args.raw:
        mimetype = "application/json" if rev.raw_format == "json" else "application/yaml"
        return Response(redact_raw(rev.raw, rev.raw_format) if viewer else rev.raw, mimetype=mimetype)
    shown = redact_env(rev.spec) if viewer else rev.spec
    out = SpecOut(app=app.name, revision=rev.number, content_hash=rev.content_hash, spec=shown)
    return jsonify(out.model_dump(mode="json"))


@bp.get(f"/{NAME}/revisions")
@operation("An app's revisions, oldest first", tag="apps", responses={200: RevisionList, 404: ErrorOut})
def revisions(name: str) -> Response:
    return jsonify(revision_list(name).model_dump(mode="json"))


def revision_list(name: str) -> RevisionList:
    app = app_or_404(name)
    revs = [
        RevisionOut(
            number=r.number,
            content_hash=r.content_hash,
            current=r.number == app.revision,
            created_at=r.created_at,
            created_by=r.created_by,
            warnings=list(r.warnings),
            restored_from=r.restored_from,
        )
        for r in app.revisions
    ]
    return RevisionList(app=app.name, revisions=revs)


@bp.get(f"/{NAME}/diff")
@operation(
    "What changes between two revisions of an app, field by field, and the replicas a rollout would replace",
    tag="apps",
    query=DiffQuery,
    responses={200: DiffOut, 404: ErrorOut, 422: ErrorOut},
)
def diff(name: str) -> Response:
    args = query(DiffQuery)
    app = app_or_404(name)
    db = session()
    to = args.to if args.to is not None else app.revision
    after = get_revision(db, app, to)
    if after is None:
        raise not_found(f"revision of app {name}", str(to))
    start = args.from_
    if start is None:
        start = max((r.number for r in app.revisions if r.number < to), default=None)
        if start is None:
            rule = f"no revision before {to}; name one with `from`"
            raise ApiError(422, "invalid_parameter", f"from: {rule}", [field("from", rule)])
    before = get_revision(db, app, start)
    if before is None:
        raise not_found(f"revision of app {name}", str(start))
    out = DiffOut(
        app=app.name,
        from_revision=before.number,
        to_revision=after.number,
        same_spec=before.content_hash == after.content_hash,
        changes=_changes(diff_specs(before.spec, after.spec)),
        replace=_replicas_to_replace(app, after.content_hash),
    )
    return jsonify(out.model_dump(mode="json"))
