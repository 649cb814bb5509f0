"""Per-process and per-request state of the API: settings, the session factory, the caller."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings
from orchestry.config.secretbox import SecretBox, SecretKeyError, load_box
from orchestry.models.apps import App, get_app
from orchestry.runtime.types import Runtime
from orchestry.web.errors import ApiError, field, not_found
from orchestry.web.schemas import validation_fields
from orchestry.workflows.components import ComponentState

Q = TypeVar("Q", bound=BaseModel)


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    sessions: sessionmaker[Session]
    wake: Callable[[], None] | None = None  # pokes this process's dispatcher after an enqueue commits
    runtime: Runtime | None = None  # read-only use: logs
    components: Callable[[], Mapping[str, ComponentState]] | None = None  # this node's nginx, Docker, database
    read_sessions: sessionmaker[Session] | None = None  # for GET and HEAD, which only read


def ctx() -> ApiContext:
    context: ApiContext = current_app.extensions["orchestry"]
    return context


def wake_dispatcher() -> None:
    """Start the job now if this process leads (other nodes learn of it by NOTIFY or by polling)."""
    wake = ctx().wake
    if wake is not None:
        wake()


def session() -> Session:
    """The request's session, opened on first use and closed when the request ends."""
    if "db" not in g:
        reads = ctx().read_sessions if request.method in ("GET", "HEAD") else None
        g.db = (reads or ctx().sessions)()
    db: Session = g.db
    return db


def app_or_404(name: str) -> App:
    """The app named in the URL, from the request's session; a JSON 404 when there is none."""
    app = get_app(session(), name)
    if app is None:
        raise not_found("app", name)
    return app


def json_object(*, required: bool) -> dict[str, Any] | None:
    """The request's JSON object body: None when empty and not required; 422 when empty and required or
    not an object, 415 for another media type, 400 for malformed JSON (each naming `<body>`)."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        if required:
            raise ApiError(422, "invalid", "a JSON body is required", [field("<body>", "required")])
        return None
    if request.mimetype not in ("application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"send application/json, not {request.mimetype}")
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        rule = "given more than once in the same object"
        raise ApiError(400, "malformed_json", f"{exc.key}: {rule}", [field(exc.key, rule)]) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "<body>: must be a JSON object", [field("<body>", "must be a JSON object")])
    return data


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: `{"replicas": 1, "replicas": 9}` is ambiguous (parsers
    disagree on which one wins), so it is refused, as spec bodies are."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def json_body(model: type[Q], *, required: bool) -> Q:
    """The request's JSON body as `model` (its defaults when empty and not required); 422 naming each field."""
    data = json_object(required=required)
    return validated(model, data if data is not None else {})


def validated(model: type[Q], data: dict[str, Any]) -> Q:
    """`data` as `model`; 422 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = validation_fields(exc)
        raise ApiError(422, "invalid", "; ".join(f["message"] for f in fields), fields) from None


def close_session(_exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def actor() -> str:
    """Who is asking, for the audit trail: the token's name, or `anonymous` while no token exists."""
    name: str = g.get("actor", "anonymous")
    return name


def query(model: type[Q]) -> Q:
    """Validate the query string; a bad or unknown parameter is a 400 naming it."""
    raw: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        if len(values) > 1:
            raise ApiError(
                400,
                "invalid_parameter",
                f"{key}: given more than once",
                [{"field": key, "rule": "given more than once", "message": f"{key}: given more than once"}],
            )
        raw[key] = values[0]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = validation_fields(exc)
        raise ApiError(400, "invalid_parameter", "; ".join(f["message"] for f in fields), fields) from None


def secret_box() -> SecretBox:
    """The box that seals what the API stores (secrets, registry passwords, certificate keys, webhooks); a 503
    naming the missing key when the node has none."""
    try:
        return load_box(ctx().settings)
    except SecretKeyError as exc:
        raise ApiError(503, "secret_key_unavailable", str(exc)) from None


def stored(out: BaseModel, location: str, created: bool) -> tuple[Response, int]:
    """The answer to a PUT that stores a resource: 201 with its Location when it is new, else 200."""
    resp = jsonify(out.model_dump(mode="json"))
    if created:
        resp.headers["Location"] = location
    return resp, 201 if created else 200


def operator_only(what: str) -> None:
    """A 403 unless the request's token has the operator role (no token: the open loopback mode is an operator);
    `what` names what is guarded, e.g. "secrets"."""
    if g.get("role", "operator") != "operator":
        raise ApiError(403, "forbidden", f"{what} need a token with the operator role")
