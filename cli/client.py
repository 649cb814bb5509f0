"""The CLI's HTTP client: tries each configured controller in turn, turns API errors into messages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


class CliError(Exception):
    """A failure to report as one message (plus detail lines) and exit code 1."""

    def __init__(self, message: str, lines: list[str] | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.lines = lines or []
        self.code = code


@dataclass
class Client:
    urls: list[str]
    token: str = ""
    timeout: float = 30.0

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        failures = []
        for base in self.urls:
            try:
                resp = httpx.request(method, base + path, headers=headers, timeout=self.timeout, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{base} ({_reason(exc)})")
                continue
            except httpx.HTTPError as exc:
                raise CliError(f"request to {base} failed: {_reason(exc)}") from None
            if resp.is_success or resp.status_code in ok:
                return resp
            raise _api_error(resp)
        raise CliError(
            "cannot reach the controller at " + ", ".join(failures),
            ["is `orchestry serve` running? Set ORCHESTRY_URL or --url to where it listens."],
        )

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[Iterator[str]]:
        """A streamed response's lines (logs -f); same failover and error handling as `request`."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        failures = []
        for base in self.urls:
            try:
                with httpx.stream(
                    method, base + path, headers=headers, timeout=httpx.Timeout(self.timeout, read=None), **kwargs
                ) as resp:
                    if not resp.is_success:
                        resp.read()
                        raise _api_error(resp)
                    yield resp.iter_lines()
                    return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{base} ({_reason(exc)})")
            except httpx.HTTPError as exc:
                raise CliError(f"request to {base} failed: {_reason(exc)}") from None
        raise CliError("cannot reach the controller at " + ", ".join(failures))

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text.splitlines()[0]


def _api_error(resp: httpx.Response) -> CliError:
    try:
        body = resp.json()
        detail = body.get("detail") or body.get("error") or resp.reason_phrase
        fields = [f.get("message", "") for f in body.get("fields", []) if isinstance(f, dict)]
    except (ValueError, AttributeError):
        detail, fields = resp.text.strip()[:200] or resp.reason_phrase, []
    lines = [f for f in fields if f and f != detail]
    return CliError(f"{detail} (HTTP {resp.status_code})", lines)
