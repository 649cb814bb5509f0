"""Webhooks, the pure part (workflows/webhooks.py) as tables: subscriptions and matching, the URL's rules, the
payload and its bounds, the signature a receiver verifies, an attempt's outcome and the retry schedule. And the
catalogue of event types against the types the source records."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from orchestry.workflows.webhooks import (
    EVENT_TYPES,
    MAX_ATTEMPTS,
    MAX_BODY,
    MAX_TEXT,
    TEST_EVENT,
    EventFacts,
    Settled,
    default_name,
    display_url,
    matches,
    payload,
    retry_delay,
    settle,
    signature,
    subscription_problem,
    url_problem,
    verify,
)

from conftest import ROOT

AT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
EVENT = EventFacts(7, "job.failed", AT, "node:a", "deploy job 3 failed: image missing", "ghost", {"kind": "deploy"})

# subscriptions, event type, details, delivered?
MATCHES = {
    "exact type": (["job.failed"], "job.failed", {"kind": "deploy"}, True),
    "another type": (["job.failed"], "cert.failed", {}, False),
    "a family takes its types": (["leader"], "leader.lease_lost", {}, True),
    "a family is a whole first word, not a prefix": (["lead"], "leader.elected", {}, False),
    "a type is not a family": (["app.scale"], "app.scaled", {}, False),
    "* takes everything": (["*"], "replica.replaced", {}, True),
    "any of several": (["cert", "job.failed"], "cert.failed", {}, True),
    "no subscription": ([], "job.failed", {}, False),
    "a delivery job's own failure never (no loop)": (["*"], "job.failed", {"kind": "webhook-deliver"}, False),
    "... even subscribed by type": (["job.failed"], "job.failed", {"kind": "webhook-deliver"}, False),
    "another job's failure": (["*"], "job.failed", {"kind": "cert-issue"}, True),
}


@pytest.mark.parametrize(("subs", "type_", "details", "expected"), MATCHES.values(), ids=MATCHES.keys())
def test_matches(subs: list[str], type_: str, details: dict[str, str], expected: bool) -> None:
    assert matches(subs, type_, details) is expected


@pytest.mark.parametrize(
    ("entry", "ok"),
    [("*", True), ("job.failed", True), ("leader", True), ("cert", True), ("jobs.failed", False),
     ("job", True), ("app.scaled", False), ("", False), ("**", False), ("webhook.test", False)],
)  # fmt: skip
def test_subscription_problem(entry: str, ok: bool) -> None:
    problem = subscription_problem(entry)
    assert (problem is None) is ok
    if not ok:
        assert "unknown event type" in (problem or "") and repr(entry) in (problem or "")


URLS = {
    "https": ("https://hooks.example.test/services/T0/B0/xyz", None),
    "http with port and query": ("http://127.0.0.1:9000/hook?x=1", None),
    "ipv6": ("http://[::1]:8080/h", None),
    "ftp": ("ftp://example.test/x", "must start with http:// or https://"),
    "no scheme": ("example.test/hook", "must start with http:// or https://"),
    "no host": ("https:///path", "must name a host"),
    "credentials": ("https://user:pw@example.test/", "must not carry credentials"),
    "a user alone": ("https://user@example.test/", "must not carry credentials"),
    "fragment": ("https://example.test/h#x", "must not have a #fragment"),
    "space": ("https://example.test/a b", "must not contain spaces"),
    "newline": ("https://example.test/\nX-Injected: 1", "must not contain spaces"),
    "bad port": ("https://example.test:99999/", "is not a valid URL"),
    "port 0": ("https://example.test:0/", "port must be 1..65535"),
    "too long": ("https://example.test/" + "a" * 2100, "must be at most 2048 characters"),
}


@pytest.mark.parametrize(("url", "problem"), URLS.values(), ids=URLS.keys())
def test_url_problem(url: str, problem: str | None) -> None:
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found


@pytest.mark.parametrize(
    ("url", "shown", "name"),
    [
        ("https://hooks.slack.com/services/T0/B0/secret", "https://hooks.slack.com/…", "hooks-slack-com"),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/", "127-0-0-1"),
        ("http://recv.test?token=abc", "http://recv.test/…", "recv-test"),
        ("http://[::1]:80", "http://[::1]:80/", "1"),
    ],
)
def test_display_url_hides_path_and_query_and_default_name(url: str, shown: str, name: str) -> None:
    assert display_url(url) == shown
    assert default_name(url) == name


def test_payload_is_the_same_bytes_on_every_attempt_and_says_what_happened() -> None:
    body = payload("k-1", "ops", "prod", EVENT)
    assert body == payload("k-1", "ops", "prod", EVENT)
    data = json.loads(body)
    assert data == {
        "delivery": "k-1",
        "webhook": "ops",
        "cluster": "prod",
        "type": "job.failed",
        "event": {
            "id": 7,
            "type": "job.failed",
            "created_at": "2026-12-07T10:00:00+00:00",
            "app": "ghost",
            "actor": "node:a",
            "message": "deploy job 3 failed: image missing",
            "details": {"kind": "deploy"},
        },
    }


def test_a_large_event_goes_without_its_details() -> None:
    big = EventFacts(1, "app.created", AT, "token:ci", "m" * 100_000, "a", {"warnings": ["w" * 1000] * 100})
    body = payload("k", "ops", "c", big)
    assert len(body) <= MAX_BODY
    event = json.loads(body)["event"]
    assert event["details"] == {"truncated": True} and len(event["message"]) == MAX_TEXT


ELECTED = EventFacts(2, "leader.elected", AT, "node:b", "node b leads (term 4)")


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (EVENT, "[orchestry prod] job.failed: app ghost: deploy job 3 failed: image missing"),
        (ELECTED, "[orchestry prod] leader.elected: node b leads (term 4)"),
    ],
)
def test_slack_format_is_one_text(event: EventFacts, text: str) -> None:
    assert json.loads(payload("k", "ops", "prod", event, "slack")) == {"text": text}


def test_slack_text_is_bounded() -> None:
    long = EventFacts(3, "cert.failed", AT, "job:1", "x" * 10_000)
    assert len(json.loads(payload("k", "ops", "prod", long, "slack"))["text"]) == MAX_TEXT


def test_signature_is_hmac_sha256_of_time_dot_body() -> None:
    body = b'{"a":1}'
    mac = hmac.new(b"whsec_test", b'1765100000.{"a":1}', hashlib.sha256).hexdigest()
    assert signature("whsec_test", 1765100000, body) == f"t=1765100000,v1={mac}"
    # A fixed vector, so a receiver written in another language can check its own implementation.
    assert signature("secret", 0, b"") == "t=0,v1=" + hmac.new(b"secret", b"0.", hashlib.sha256).hexdigest()


GOOD = signature("s3cret", 1000, b"body")
VERIFY = {
    "good": ("s3cret", GOOD, b"body", 1000, True),
    "within the tolerance": ("s3cret", GOOD, b"body", 1299, True),
    "too old (a replay)": ("s3cret", GOOD, b"body", 1301, False),
    "from the future": ("s3cret", GOOD, b"body", 699, False),
    "wrong secret": ("other", GOOD, b"body", 1000, False),
    "body changed": ("s3cret", GOOD, b"body ", 1000, False),
    "time changed": ("s3cret", GOOD.replace("t=1000", "t=1001"), b"body", 1001, False),
    "two v1, one good (a secret rotated)": ("s3cret", GOOD + ",v1=00ff", b"body", 1000, True),
    "no time": ("s3cret", GOOD.split(",", 1)[1], b"body", 1000, False),
    "garbage": ("s3cret", "nonsense", b"body", 1000, False),
}


@pytest.mark.parametrize(("secret", "header", "body", "now", "ok"), VERIFY.values(), ids=VERIFY.keys())
def test_verify(secret: str, header: str, body: bytes, now: float, ok: bool) -> None:
    assert verify(secret, header, body, now) is ok


SETTLE = {
    "200 delivers": ((200, None, 1), Settled("delivered")),
    "204 delivers": ((204, None, 3), Settled("delivered")),
    "500 retries after 1 s": ((500, "oops", 1), Settled("pending", "answered HTTP 500: oops", 1.0)),
    "503 on attempt 3 retries after 30 s": ((503, None, 3), Settled("pending", "answered HTTP 503", 30.0)),
    "429 retries": ((429, None, 2), Settled("pending", "answered HTTP 429", 5.0)),
    "408 retries": ((408, None, 1), Settled("pending", "answered HTTP 408", 1.0)),
    "no answer retries": ((None, "ConnectError: refused", 1), Settled("pending", "ConnectError: refused", 1.0)),
    "the last attempt gives up": (
        (500, None, MAX_ATTEMPTS),
        Settled("failed", f"gave up after {MAX_ATTEMPTS} attempts: answered HTTP 500"),
    ),
    "404 gives up at once": ((404, "no such hook", 1), Settled("failed", "answered HTTP 404: no such hook")),
    "401 gives up at once": ((401, None, 1), Settled("failed", "answered HTTP 401")),
    "a redirect is not followed": (
        (301, None, 1),
        Settled("failed", "answered HTTP 301: redirects are not followed (give the final URL)"),
    ),
}


@pytest.mark.parametrize(("answer", "expected"), SETTLE.values(), ids=SETTLE.keys())
def test_settle(answer: tuple[int | None, str | None, int], expected: Settled) -> None:
    assert settle(*answer) == expected


def test_retry_schedule_grows_and_is_capped() -> None:
    assert [retry_delay(n) for n in (0, 1, 2, 3, 4, 5, 6, 50)] == [1, 1, 5, 30, 120, 600, 600, 600]


# -- the catalogue of event types against the source -----------------------------------------------------------

# Types built by f-strings in the source, expanded by hand: each must be in the catalogue.
EXPANDED = {
    "app.{kind}": ("app.deploy", "app.stop", "app.scale", "app.delete", "app.rollback", "app.restart"),
    "app.{plan.action}": ("app.created", "app.revised"),
    "replica.{after}": ("replica.healthy", "replica.unhealthy", "replica.unknown"),
    "scaling.{decision.direction}": ("scaling.out", "scaling.in"),
    "{name}.failed": ("docker.failed", "nginx.failed"),
    "webhook.{state}": ("webhook.disabled", "webhook.enabled"),
}


def _recorded_types() -> tuple[set[str], set[str]]:
    """Event types given as literals to record(), ctx.event(), request_operation(event=...) or as *_EVENT
    constants; and the f-string types (their source text)."""
    literals: set[str] = set()
    formatted: set[str] = set()
    skip = {".venv", "tests", "testapp", "bench", "build"}
    for path in ROOT.rglob("*.py"):
        if skip & set(path.relative_to(ROOT).parts):
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            candidates: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("record", "event") and len(node.args) >= 2:
                    candidates.append(node.args[1])
                candidates += [k.value for k in node.keywords if k.arg == "event"]
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.endswith("_EVENT") for t in node.targets
            ):
                candidates.append(node.value)
            for value in candidates:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    literals.add(value.value)
                elif isinstance(value, ast.JoinedStr):
                    formatted.add(ast.get_source_segment(source, value) or "")
    return literals, formatted


def test_the_catalogue_holds_every_event_type_recorded() -> None:
    literals, formatted = _recorded_types()
    assert {"job.failed", "cert.failed", "leader.elected", "replica.replaced", "app.rolled_back"} <= literals
    assert {"rollout.halted", "rollout.rolled_back"} <= literals  # jobs/converge.py's *_EVENT constants
    assert literals - set(EVENT_TYPES) == {TEST_EVENT}, "add the new event types to workflows/webhooks.py EVENT_TYPES"
    shapes = {f.strip("f\"'") for f in formatted}
    assert shapes <= set(EXPANDED), f"expand these event types in EXPANDED and the catalogue: {shapes - set(EXPANDED)}"
    for types in EXPANDED.values():
        assert set(types) <= set(EVENT_TYPES)
