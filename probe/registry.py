"""Checks a registry login the way `docker login` does, before Orchestry stores the credentials.

GET /v2/ without credentials reads the registry's challenge; a `Basic` one is answered on /v2/ with the
credentials, a `Bearer` one at the token server it names (workflows/registry.py decides the URLs). A wrong
password is then refused here, at `orchestry registry login`, rather than at the next deploy's pull. Timeouts
are short (a login is a person waiting) and no proxy from the environment is used: the credentials go to the
registry and its token server only. Redirects are not followed (a registry answers /v2/ itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx

from orchestry.workflows.registry import parse_challenge, registry_urls, token_request

CONNECT_SECONDS = 3.0
READ_SECONDS = 5.0

Outcome = Literal["ok", "open", "refused", "unreachable", "unexpected"]


@dataclass(frozen=True)
class LoginCheck:
    outcome: Outcome  # ok: accepted; open: the registry asks for no credentials; the rest: not stored
    url: str  # the /v2/ (or token server) URL that decided
    detail: str = ""  # for refused / unreachable / unexpected: what was answered, in a few words


def check_login(server: str, username: str, password: str) -> LoginCheck:
    """Ask `server` whether it takes `username` / `password`. Never raises for the registry's sake."""
    timeout = httpx.Timeout(READ_SECONDS, connect=CONNECT_SECONDS)
    with httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False) as client:
        errors: list[str] = []
        urls = registry_urls(server)
        for url in urls:
            try:
                first = client.get(url)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {_reason(exc)}")
                continue
            return _answer(client, url, first, username, password)
        return LoginCheck("unreachable", urls[0], "; ".join(errors))


def _answer(client: httpx.Client, url: str, first: httpx.Response, username: str, password: str) -> LoginCheck:
    if first.status_code == 200:
        return LoginCheck("open", url)
    challenge = parse_challenge(first.headers.get("www-authenticate"))
    if first.status_code != 401 or challenge is None:
        return LoginCheck("unexpected", url, f"HTTP {first.status_code} without a registry's challenge")
    params: dict[str, str] = {}
    if challenge.scheme == "basic":
        target = url
    else:
        asked = token_request(challenge, username)
        if asked is None:
            return LoginCheck("unexpected", url, "a Bearer challenge without a usable realm")
        target, params = asked
    try:
        answer = client.get(target, params=params, auth=(username, password))
    except httpx.HTTPError as exc:
        return LoginCheck("unreachable", target, _reason(exc))
    if answer.status_code == 200:
        return LoginCheck("ok", target)
    if answer.status_code in (401, 403):
        return LoginCheck("refused", target, f"HTTP {answer.status_code}")
    return LoginCheck("unexpected", target, f"HTTP {answer.status_code}")


def _reason(exc: httpx.HTTPError) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
