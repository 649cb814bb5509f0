"""/api/v1/apps/<name>/logs: the replicas' logs merged, each line prefixed with its replica's name.

The one read the API makes of the container engine: logs live there and nowhere else. It reads only, and
releases its database session before streaming so a long `follow` holds no lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response

from orchestry.runtime.types import EngineUnavailable, LogLine
from orchestry.web.context import app_or_404, close_session, ctx, query
from orchestry.web.errors import ApiError
from orchestry.web.openapi import operation
from orchestry.web.schemas import ErrorOut, LogsQuery

bp = Blueprint("logs", __name__, url_prefix="/api/v1/apps")


def _format(line: LogLine) -> str:
    stamp = line.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{line.replica} {stamp} {line.text.rstrip()}\n"


@bp.get("/<string(maxlength=253):name>/logs")
@operation(
    "The app's replicas' logs, merged (text, one line each: replica, time, text)",
    tag="apps",
    query=LogsQuery,
    responses={200: "text/plain", 404: ErrorOut, 503: ErrorOut},
)
def logs(name: str) -> Response:
    args = query(LogsQuery)
    app_or_404(name)
    close_session()
    runtime = ctx().runtime
    if runtime is None:
        raise ApiError(503, "unavailable", "this controller has no container engine configured")
    try:
        lines = runtime.logs(ctx().settings.cluster_name, name, args.lines, args.follow)
        if not args.follow:  # bounded (lines per replica): read it all now, so engine errors become a 503
            lines = iter(list(lines))
    except EngineUnavailable as exc:
        raise ApiError(503, "unavailable", f"the container engine did not answer: {exc}") from None

    def body() -> Iterator[str]:
        try:
            for line in lines:
                yield _format(line)
        except EngineUnavailable:
            return
        finally:
            close = getattr(lines, "close", None)
            if close is not None:
                close()

    return Response(body(), mimetype="text/plain")
