"""Per-process and per-request state of the API: settings, the session factory, the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings
from orchestry.runtime.types import Runtime
from orchestry.web.errors import ApiError
from orchestry.web.schemas import validation_fields

Q = TypeVar("Q", bound=BaseModel)


@dataclass(frozen=True)
class ApiContext:
    settings: Settings
    sessions: sessionmaker[Session]
    wake: Callable[[], None] | None = None  # pokes this process's dispatcher after an enqueue commits
    runtime: Runtime | None = None  # read-only use: logs


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
        g.db = ctx().sessions()
    db: Session = g.db
    return db


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
