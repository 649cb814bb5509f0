"""The live fragments' cost: one render for every open dashboard, and no body for a poll that holds it already.

- A fragment rendered in the last SHARED_SECONDS answers every dashboard polling the same one (same path and
  query, same role): ten open dashboards cost one render per period, not ten. Concurrent misses of one
  fragment render it once (the others wait for that render). Who may see it is still checked on every
  request (web/ui/access.py runs first); fragments hold nobody's CSRF token.
- Each render is compressed once (gzip, for every poll that accepts it: a 16 KB table goes out as ~2 KB) and
  gets an ETag (a hash of its body), both computed once per render, not per request. The page's script
  sends the one it holds as `If-None-Match`; the same fragment answers 304 without a body, and the script
  leaves the region as it is. Relative times in fragments are written as absolute ones (`g.ui_fragment`): the
  script turns them relative, so a fragment whose data did not change keeps its ETag from one render to the
  next.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response, current_app, g, request

# A fragment rendered this recently answers every dashboard polling the same one. The figures change once per
# metrics collection (every 2 s by default) and the pages poll every 2 s or more: at most one render per period.
SHARED_SECONDS = 2.0
MAX_ITEMS = 512  # bounded: entries older than SHARED_SECONDS are worthless anyway


@dataclass(frozen=True)
class Rendered:
    at: float  # time.monotonic() of the render
    body: bytes
    etag: str
    gzipped: bytes


class SharedRenders:
    """The fragments rendered in the last SHARED_SECONDS, by (path and query, role)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Rendered] = {}
        self._rendering: dict[tuple[str, str], threading.Lock] = {}

    def _fresh(self, key: tuple[str, str]) -> Rendered | None:
        with self._lock:
            hit = self._items.get(key)
        return hit if hit is not None and time.monotonic() - hit.at < SHARED_SECONDS else None

    def get(self, key: tuple[str, str], render: Callable[[], str | bytes]) -> Rendered:
        if (hit := self._fresh(key)) is not None:
            return hit
        with self._lock:
            one = self._rendering.setdefault(key, threading.Lock())
        with one:  # a second poll of the same fragment waits for this render instead of doing its own
            if (hit := self._fresh(key)) is not None:
                return hit
            body = render()
            data = body.encode() if isinstance(body, str) else body
            etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
            item = Rendered(time.monotonic(), data, etag, gzip.compress(data, 6, mtime=0))
            with self._lock:
                if len(self._items) >= MAX_ITEMS:
                    now = time.monotonic()
                    self._items = {k: v for k, v in self._items.items() if now - v.at < SHARED_SECONDS}
                    self._rendering = {k: v for k, v in self._rendering.items() if k in self._items}
                self._items[key] = item
            return item


def _renders() -> SharedRenders:
    renders: SharedRenders = current_app.extensions.setdefault("orchestry.dashboard_renders", SharedRenders())
    return renders


def fragment(render: Callable[[], str | bytes], mimetype: str = "text/html") -> Response:
    """The answer to a poll of a live fragment: the shared render with its ETag, or a 304 without a body when
    the poll sent that ETag (`If-None-Match`)."""
    g.ui_fragment = True
    item = _renders().get((request.full_path, str(g.get("role"))), render)
    packed = request.accept_encodings["gzip"] > 0  # quality-aware: `gzip;q=0` is a refusal
    etag = item.etag[:-1] + '-gz"' if packed else item.etag  # one ETag per representation
    held = request.headers.get("If-None-Match", "")
    if held and etag in (tag.strip() for tag in held.split(",")):
        response = Response(status=304)
    else:
        response = Response(item.gzipped if packed else item.body, mimetype=mimetype)
        if packed:
            response.headers["Content-Encoding"] = "gzip"
    response.headers["ETag"] = etag
    response.headers["Vary"] = "Accept-Encoding"
    return response
