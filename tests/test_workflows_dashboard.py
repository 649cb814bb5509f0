"""The dashboard's pure decisions: who may post a form, how figures and times read, how charts are thinned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestry.workflows.dashboard import (
    CHART_POINTS,
    Sample,
    ago,
    csrf_token,
    duration,
    form_refusal,
    millis,
    number,
    safe_next,
    thin,
)

NONCE = "n" * 43
GOOD = csrf_token(NONCE)


@pytest.mark.parametrize(
    ("method", "origin", "fetch_site", "nonce", "sent", "refused"),
    [
        ("GET", "https://evil.example", "cross-site", None, None, None),  # reads are never refused here
        ("POST", None, None, NONCE, GOOD, None),  # a form without Origin (older browsers) and the token
        ("POST", "http://127.0.0.1:8000", "same-origin", NONCE, GOOD, None),
        ("POST", None, None, NONCE, None, ("csrf", "csrf")),  # no token
        ("POST", None, None, NONCE, "0" * 64, ("csrf", "csrf")),  # a wrong token
        ("POST", None, None, NONCE, csrf_token("other-nonce-xxxxxxxxxxxxxx"), ("csrf", "csrf")),  # another browser's
        ("POST", None, None, None, GOOD, ("csrf", "csrf")),  # no nonce cookie
        ("POST", "https://evil.example", None, NONCE, GOOD, ("cross_site", "Origin")),
        ("POST", "http://127.0.0.1:9999", None, NONCE, GOOD, ("cross_site", "Origin")),  # another port
        ("POST", None, "cross-site", NONCE, GOOD, ("cross_site", "Sec-Fetch-Site")),
        ("POST", None, "same-site", NONCE, GOOD, ("cross_site", "Sec-Fetch-Site")),
        ("DELETE", None, None, NONCE, None, ("csrf", "csrf")),
    ],
)
def test_form_refusal(
    method: str,
    origin: str | None,
    fetch_site: str | None,
    nonce: str | None,
    sent: str | None,
    refused: tuple[str, str] | None,
) -> None:
    got = form_refusal(
        method, scheme="http", host="127.0.0.1:8000", origin=origin, fetch_site=fetch_site, nonce=nonce, sent=sent
    )
    assert (None if got is None else (got.error, got.field)) == refused
    if got is not None:
        assert got.status == 403


def test_csrf_tokens_differ_per_nonce_and_are_stable() -> None:
    assert csrf_token(NONCE) == csrf_token(NONCE)
    assert csrf_token(NONCE) != csrf_token(NONCE + "x")
    assert NONCE not in csrf_token(NONCE)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        (None, "/ui/"),
        ("", "/ui/"),
        ("/ui/apps/web?range=1h", "/ui/apps/web?range=1h"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui/\\evil", "/ui/"),
        ("/api/v1/apps", "/ui/"),
    ],
)
def test_safe_next(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


@pytest.mark.parametrize(
    ("value", "unit", "digits", "text"),
    [
        (None, "req/s", 1, "-"),
        (float("nan"), "%", 0, "-"),
        (0.0, "req/s", 1, "0.0 req/s"),
        (12.345, "req/s", 1, "12.3 req/s"),
        (1234.5, "req/s", 1, "1,234 req/s"),
        (37.6, "%", 0, "38%"),
        (7.25, "%", 0, "7.2%"),
        (0.0213, "%", 0, "0.021%"),
        (0.0, "%", 0, "0.0%"),
        (3, "", 1, "3.0"),
    ],
)
def test_number(value: float | None, unit: str, digits: int, text: str) -> None:
    assert number(value, unit, digits) == text


@pytest.mark.parametrize(
    ("value", "text"), [(None, "-"), (3.21, "3.2 ms"), (38.4, "38 ms"), (999.0, "999 ms"), (1250.0, "1.25 s")]
)
def test_millis(value: float | None, text: str) -> None:
    assert millis(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-3, "0 ms"),
        (0.85, "850 ms"),
        (4.25, "4.2 s"),
        (42, "42 s"),
        (185, "3 min 5 s"),
        (180, "3 min"),
        (7800, "2 h 10 min"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_ago() -> None:
    now = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    assert ago(None, now) == "never"
    assert ago(now, now) == "just now"
    assert ago(now - timedelta(seconds=12), now) == "12 s ago"
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now + timedelta(seconds=2), now) == "in 2.0 s"


def test_thin_keeps_few_samples_as_they_are() -> None:
    samples = [Sample(float(t), (float(t), None)) for t in range(10)]
    assert thin(samples, 0, 100) == samples
    assert thin(samples, 5, 100) == samples[5:]  # only the range


def test_thin_averages_each_slice_and_keeps_gaps() -> None:
    # a day at 2 s with the middle third missing: at most CHART_POINTS points, none inside the gap
    day = 86400
    samples = [
        Sample(float(t), (1.0 if t < day / 2 else 3.0, None if t % 4 else 2.0))
        for t in range(0, day, 2)
        if not day / 3 <= t < 2 * day / 3
    ]
    points = thin(samples, 0, day)
    assert len(points) <= CHART_POINTS
    assert not any(day / 3 + 500 <= p.at < 2 * day / 3 - 500 for p in points)
    assert {p.values[0] for p in points} == {1.0, 3.0}  # each slice's mean
    assert {p.values[1] for p in points} == {2.0}  # a missing figure is left out, not counted as zero
    assert [p.at for p in points] == sorted(p.at for p in points)
