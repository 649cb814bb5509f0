"""/api/v1/apps/<name>/logs: the replicas' logs merged, each line prefixed with its replica's name.

The one read the API makes of the container engine: logs live there and nowhere else. It reads only, and
releases its database session before streaming so a long `follow` holds no lock.

A `follow` stream holds one of the server's request threads for as long as it lasts, so at most half of
them stream at once (`follow_slots`): the next one is told to retry (503 with Retry-After), and `/health`
and the API keep answering whatever the number of followers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from flask import Blueprint, Response, current_app

from orchestry.runtime.types import EngineUnavailable, LogLine
from orchestry.web.context import app_or_404, close_session, ctx, query
from orchestry.web.errors import ApiError
from orchestry.web.openapi import operation
from orchestry.web.schemas import ErrorOut, LogsQuery

bp = Blueprint("logs", __name__, url_prefix="/api/v1/apps")
FOLLOW_RETRY_SECONDS = 5


def follow_slots() -> threading.BoundedSemaphore:
    """This app's follow streams: half its request threads (at least one)."""
    slots = max(1, ctx().settings.threads // 2)
    found: threading.BoundedSemaphore = current_app.extensions.setdefault(
        "orchestry.follow_slots", threading.BoundedSemaphore(slots)
    )
    return found


def format_line(line: LogLine) -> str:
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
    if args.follow:
        lines, finish = followed(name, args.lines)
    else:
        lines, finish = iter(_read(name, args.lines, False)), lambda: None  # bounded: engine errors are a 503

    def body() -> Iterator[str]:
        try:
            for line in lines:
                yield format_line(line)
        except EngineUnavailable:
            return
        finally:
            finish()

    response = Response(body(), mimetype="text/plain")
    response.call_on_close(finish)
    return response


def _read(name: str, lines: int, follow: bool) -> Iterable[LogLine]:
    runtime = ctx().runtime
    if runtime is None:
        raise ApiError(503, "unavailable", "this controller has no container engine configured")
    try:
        found = runtime.logs(ctx().settings.cluster_name, name, lines, follow)
        return found if follow else list(found)
    except EngineUnavailable as exc:
        raise ApiError(503, "unavailable", f"the container engine did not answer: {exc}") from None


def followed(name: str, lines: int) -> tuple[Iterator[LogLine], Callable[[], None]]:
    """The app's log lines (`lines` of each replica, then new ones as they come) in one of this node's follow
    slots, and the function that ends the stream: once, from any thread, closing the engine's streams and
    giving the slot back. All slots taken: a 503 with Retry-After. The API's `follow` and the dashboard's
    stream share the slots."""
    slots = follow_slots()
    if not slots.acquire(blocking=False):
        raise ApiError(
            503,
            "busy",
            f"too many log streams are open on this node (at most {max(1, ctx().settings.threads // 2)}); "
            "retry later, or read without follow",
            headers={"Retry-After": str(FOLLOW_RETRY_SECONDS)},
        )
    try:
        found = _read(name, lines, True)
    except BaseException:
        slots.release()
        raise
    done = threading.Lock()

    def finish() -> None:
        if not done.acquire(blocking=False):
            return
        close = getattr(found, "close", None)
        if close is not None:
            close()
        slots.release()

    return iter(found), finish
