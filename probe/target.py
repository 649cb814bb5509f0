"""What to check on one replica, built from a normalised spec's `healthCheck`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from orchestry.workflows.health import DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Target:
    key: str  # the replica's name; check_all answers by key
    host: str
    port: int
    protocol: Literal["HTTP", "TCP"] = "HTTP"
    method: Literal["GET", "POST"] = "GET"
    path: str = "/health"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    expected_status_codes: tuple[int, ...] | None = None  # None: any 200..399 (redirects are not followed)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def accepts(self, status: int) -> bool:
        if self.expected_status_codes is None:
            return 200 <= status <= 399
        return status in self.expected_status_codes


def target_from_spec(key: str, host: str, port: int, health_check: Mapping[str, Any]) -> Target:
    """The check of one replica reachable at host:port. `health_check` is the normalised spec's
    `healthCheck`; its `port` is the container port, so the caller passes the host port published for it
    (replicas publish on 127.0.0.1)."""
    codes = health_check.get("expectedStatusCodes")
    return Target(
        key=key,
        host=host,
        port=port,
        protocol=health_check.get("protocol", "HTTP"),
        method=health_check.get("method", "GET"),
        path=health_check.get("path", "/health"),
        headers=tuple((str(h["name"]), str(h["value"])) for h in health_check.get("headers", [])),
        body=str(health_check.get("body", "")),
        expected_status_codes=tuple(int(c) for c in codes) if codes else None,
        timeout_seconds=float(health_check.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
    )
