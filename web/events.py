"""/api/v1/events and /api/v1/apps/<name>/events: the audit trail, newest first."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from orchestry.models.events import Event, query_events
from orchestry.web.context import query, session
from orchestry.web.openapi import operation
from orchestry.web.schemas import EventList, EventOut, EventsQuery

bp = Blueprint("events", __name__, url_prefix="/api/v1")


def _out(e: Event) -> EventOut:
    return EventOut(
        id=e.id,
        created_at=e.created_at,
        type=e.type,
        app=e.app_name,
        actor=e.actor,
        message=e.message,
        details=e.details,
    )


def _answer(app_name: str | None) -> Response:
    args = query(EventsQuery)
    events = query_events(session(), app_name=app_name, type_=args.type, since=args.since, limit=args.limit)
    return jsonify(EventList(events=[_out(e) for e in events]).model_dump(mode="json"))


@bp.get("/events")
@operation("Events of every app, newest first", tag="events", query=EventsQuery, responses={200: EventList})
def all_events() -> Response:
    return _answer(None)


@bp.get("/apps/<string(maxlength=253):name>/events")
@operation(
    "Events of one app (also after it was deleted), newest first",
    tag="events",
    query=EventsQuery,
    responses={200: EventList},
)
def app_events(name: str) -> Response:
    return _answer(name)
