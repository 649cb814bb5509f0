"""One HTTP exchange with this node's nginx control endpoint on loopback, through the standard library.

The control calls run several times a second on every node (the mirror's table check, its confirmation and
traffic counters, the edge's version): through httpx one cost about 1.3 ms of CPU here, through http.client
about 0.5 ms (issue 10: an idle leader's mirror was its second largest cost). A fresh connection each time,
no keep-alive: after a reload an idle connection would still point at an exiting worker. No proxy from the
environment is ever used (http.client reads none).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


class ControlTransportError(Exception):
    """No answer: refused, reset, timed out, or not HTTP."""


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float  # for each read (and the request's write), as httpx's read timeout


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: http.client.HTTPMessage  # `.get(name)` in any case, as httpx's headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.content)


def exchange(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: str | None = None,
    params: dict[str, str] | None = None,
    timeouts: Timeouts,
) -> Reply:
    """Send one request to 127.0.0.1:`port` and read the whole answer. Raises ControlTransportError."""
    target = f"{path}?{urlencode(params)}" if params else path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeouts.connect)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(timeouts.read)
        conn.request(
            method, target, body=body.encode() if body is not None else None, headers={**headers, "Connection": "close"}
        )
        response = conn.getresponse()
        content = response.read()
        return Reply(response.status, response.msg, content)
    except (OSError, http.client.HTTPException) as exc:
        raise ControlTransportError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
