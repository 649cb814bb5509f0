"""Replica health as tables: a check result and the history in, the new health and what to do out; when a
replica is due for a check; how long an app whose replicas keep failing waits before the next replacement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orchestry.spec import validate_document
from orchestry.workflows.health import (
    NEW_REPLICA,
    CheckPolicy,
    HealthState,
    ProbeResult,
    ReplicaHealth,
    due,
    health_verdict,
    in_rotation,
    policy_from_spec,
    replacement_backoff,
    routable,
    unprobed_health,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def health(state: HealthState = "unknown", successes: int = 0, failures: int = 0) -> ReplicaHealth:
    return ReplicaHealth(state, successes, failures, last_check_at=at(0))


def passed(seconds: float = 10, latency_ms: float = 3.0) -> ProbeResult:
    return ProbeResult(True, at(seconds), latency_ms, "HTTP 200")


def failed(seconds: float = 10, detail: str = "HTTP 500") -> ProbeResult:
    return ProbeResult(False, at(seconds), None, detail)


# -- the verdict ------------------------------------------------------------------------------------------

VERDICTS = [
    # (id, failureThreshold, successThreshold, previous, result ok, state, successes, failures, transition, replace)
    ("new replica passes once: healthy", 3, 1, NEW_REPLICA, True, "healthy", 1, 0, ("unknown", "healthy"), False),
    ("new replica needs 2 passes", 3, 2, NEW_REPLICA, True, "unknown", 1, 0, None, False),
    ("second pass of 2 puts it in", 3, 2, health("unknown", 1), True, "healthy", 2, 0, ("unknown", "healthy"), False),
    ("new replica fails once: still unknown", 3, 1, NEW_REPLICA, False, "unknown", 0, 1, None, False),
    (
        "never came up: 3rd failure",
        3,
        1,
        health("unknown", 0, 2),
        False,
        "unhealthy",
        0,
        3,
        ("unknown", "unhealthy"),
        True,
    ),
    ("healthy stays healthy", 3, 1, health("healthy", 7), True, "healthy", 8, 0, None, False),
    ("healthy, 1st failure: still in", 3, 1, health("healthy", 7), False, "healthy", 0, 1, None, False),
    ("healthy, 2nd failure: still in", 3, 1, health("healthy", 0, 1), False, "healthy", 0, 2, None, False),
    (
        "healthy, 3rd failure: out",
        3,
        1,
        health("healthy", 0, 2),
        False,
        "unhealthy",
        0,
        3,
        ("healthy", "unhealthy"),
        True,
    ),
    (
        "failureThreshold 1: out at once",
        1,
        1,
        health("healthy", 4),
        False,
        "unhealthy",
        0,
        1,
        ("healthy", "unhealthy"),
        True,
    ),
    ("unhealthy keeps failing: still replace", 3, 1, health("unhealthy", 0, 3), False, "unhealthy", 0, 4, None, True),
    (
        "unhealthy passes: back in",
        3,
        1,
        health("unhealthy", 0, 5),
        True,
        "healthy",
        1,
        0,
        ("unhealthy", "healthy"),
        False,
    ),
    ("unhealthy, 1 pass of 2: still out", 3, 2, health("unhealthy", 0, 3), True, "unhealthy", 1, 0, None, True),
    (
        "unhealthy, 2nd pass of 2: back in",
        3,
        2,
        health("unhealthy", 1),
        True,
        "healthy",
        2,
        0,
        ("unhealthy", "healthy"),
        False,
    ),
    ("a pass resets the failures", 3, 1, health("healthy", 0, 2), True, "healthy", 1, 0, None, False),
    ("a failure resets the passes", 3, 3, health("unknown", 2), False, "unknown", 0, 1, None, False),
    ("unhealthy, pass then failure", 3, 2, health("unhealthy", 1), False, "unhealthy", 0, 1, None, True),
    ("high threshold: 9th failure of 10", 10, 1, health("healthy", 0, 8), False, "healthy", 0, 9, None, False),
]


@pytest.mark.parametrize(
    ("failure", "success", "previous", "ok", "state", "successes", "failures", "transition", "replace"),
    [c[1:] for c in VERDICTS],
    ids=[c[0] for c in VERDICTS],
)
def test_verdict(
    failure: int,
    success: int,
    previous: ReplicaHealth,
    ok: bool,
    state: str,
    successes: int,
    failures: int,
    transition: tuple[str, str] | None,
    replace: bool,
) -> None:
    policy = CheckPolicy(failure_threshold=failure, success_threshold=success)
    verdict = health_verdict(previous, passed() if ok else failed(), policy)
    got = verdict.health
    assert (got.state, got.consecutive_successes, got.consecutive_failures) == (state, successes, failures)
    assert verdict.transition == transition
    assert verdict.replace == replace
    assert got.last_check_at == at(10)


def test_verdict_records_the_last_check() -> None:
    policy = CheckPolicy()
    first = health_verdict(NEW_REPLICA, passed(10, latency_ms=4.5), policy).health
    assert (first.last_check_at, first.last_latency_ms, first.last_error) == (at(10), 4.5, None)
    second = health_verdict(first, failed(20, "timeout after 5.0s"), policy).health
    assert (second.last_check_at, second.last_latency_ms, second.last_error) == (at(20), None, "timeout after 5.0s")
    third = health_verdict(second, passed(30, latency_ms=2.0), policy).health
    assert (third.last_latency_ms, third.last_error) == (2.0, "timeout after 5.0s")  # the last error is kept


def test_a_result_older_than_the_last_check_changes_nothing() -> None:
    previous = ReplicaHealth("unhealthy", 0, 3, last_check_at=at(30), last_error="HTTP 500")
    verdict = health_verdict(previous, passed(20), CheckPolicy())
    assert verdict.health == previous
    assert verdict.transition is None and verdict.replace


def test_a_failing_replica_leaves_rotation_within_failure_threshold_periods() -> None:
    """A sweep every second over a replica with periodSeconds 10 that breaks at t=100: out of rotation
    by the 3rd failing check, within failureThreshold x periodSeconds of breaking."""
    policy = CheckPolicy(period_seconds=10, failure_threshold=3, success_threshold=1)
    state, left_at, transitions = NEW_REPLICA, None, []
    for t in range(0, 200):
        now = at(t)
        if not due(policy, state, at(0), now):
            continue
        verdict = health_verdict(state, ProbeResult(t < 100, now, 1.0 if t < 100 else None, "x"), policy)
        state = verdict.health
        if verdict.transition:
            transitions.append((t, verdict.transition))
        if verdict.replace and left_at is None:
            left_at = t
    assert transitions == [(0, ("unknown", "healthy")), (left_at, ("healthy", "unhealthy"))]
    assert left_at is not None and 100 < left_at <= 100 + 3 * 10


# -- when to probe --------------------------------------------------------------------------------------

DUE = [
    # (id, initialDelaySeconds, periodSeconds, last check (s) or None, now (s), due); the container started at 0
    ("never checked, no delay", 0, 10, None, 0, True),
    ("initial delay not over", 5, 10, None, 4.999, False),
    ("initial delay over", 5, 10, None, 5, True),
    ("long initial delay", 120, 10, None, 119, False),
    ("period not over", 0, 10, 10, 15, False),
    ("period over", 0, 10, 10, 20, True),
    ("a sweep every period finds the check a few ms younger", 0, 10, 10.003, 20, True),
    ("slack is 10% of the period", 0, 10, 10, 19, True),
    ("but no more", 0, 10, 10, 18.9, False),
    ("short period, 10% slack", 0, 2, 0, 1.79, False),
    ("short period, due", 0, 2, 0, 1.8, True),
    ("long period: slack capped at 1 s", 0, 60, 0, 58.9, False),
    ("long period, due", 0, 60, 0, 59, True),
    ("initial delay wins over an old check", 30, 10, 0, 20, False),
]


@pytest.mark.parametrize(("delay", "period", "last", "now", "expected"), [c[1:] for c in DUE], ids=[c[0] for c in DUE])
def test_due(delay: float, period: float, last: float | None, now: float, expected: bool) -> None:
    policy = CheckPolicy(initial_delay_seconds=delay, period_seconds=period)
    state = ReplicaHealth(last_check_at=None if last is None else at(last))
    assert due(policy, state, at(0), at(now)) is expected


# -- replacement backoff --------------------------------------------------------------------------------

BACKOFF = [
    # (id, replacement times (s), now (s), wait in seconds or None)
    ("no replacement yet", [], 1000, None),
    ("one just now", [1000], 1000, None),
    ("two just now", [999, 1000], 1000, None),
    ("3rd of a streak: the 4th waits 30 s", [990, 995, 1000], 1000, 30),
    ("29 s after the 3rd", [960, 965, 971], 1000, 1),
    ("30 s after the 3rd", [960, 965, 970], 1000, None),
    ("4th: the 5th waits 60 s", [900, 901, 902, 1000], 1000, 60),
    ("5th: 120 s", [800, 801, 802, 900, 1000], 1000, 120),
    ("6th: 240 s", [700, 701, 702, 800, 900, 1000], 1000, 240),
    ("7th: capped at 300 s", [600, 601, 602, 700, 800, 900, 1000], 1000, 300),
    ("100th: still 300 s", [i * 5.0 for i in range(100)], 495, 300),
    ("cap over", [600, 601, 602, 700, 800, 900, 1000], 1300, None),
    ("a gap of 10 min ends a streak", [0, 1, 2, 700], 700, None),
    ("a gap just under 10 min does not", [0, 599, 1198], 1198, 30),
    ("10 quiet minutes reset the app", [300, 301, 302], 902, None),
    ("order does not matter", [1000, 990, 995], 1000, 30),
    ("a time in the future is ignored", [990, 995, 1005], 1000, None),
]


@pytest.mark.parametrize(("times", "now", "wait"), [c[1:] for c in BACKOFF], ids=[c[0] for c in BACKOFF])
def test_replacement_backoff(times: list[float], now: float, wait: float | None) -> None:
    got = replacement_backoff([at(t) for t in times], at(now))
    assert got == (None if wait is None else timedelta(seconds=wait))


def test_replacements_of_a_crash_looping_app() -> None:
    """Replace whenever allowed for an hour: 3 at once, then 30 s, 60 s, 120 s, 240 s, then every 5 minutes."""
    done: list[datetime] = []
    for t in range(0, 3600):
        while replacement_backoff(done, at(t)) is None and len(done) < 100:
            done.append(at(t))
            if len(done) >= 3:
                break  # past the free ones, at most one per second of this loop
    offsets = [(d - T0).total_seconds() for d in done]
    assert offsets[:6] == [0, 0, 0, 30, 90, 210]
    assert offsets[6:] == list(range(450, 3600, 300))  # from the 7th on, one every 5 minutes


# -- the policy, and rotation without one -------------------------------------------------------------

POLICIES = [
    ("no healthCheck", None, None),
    ("empty healthCheck", {}, None),
    ("no port (a worker without ports)", {"protocol": "HTTP", "path": "/health", "periodSeconds": 10}, None),
    ("port None", {"port": None}, None),
    ("port only: defaults", {"port": 8080}, CheckPolicy(0, 10, 5, 3, 1)),
    (
        "every field",
        {
            "port": 8080,
            "initialDelaySeconds": 15,
            "periodSeconds": 2.5,
            "timeoutSeconds": 1,
            "failureThreshold": 5,
            "successThreshold": 2,
        },
        CheckPolicy(15, 2.5, 1, 5, 2),
    ),
]


@pytest.mark.parametrize(("check", "expected"), [c[1:] for c in POLICIES], ids=[c[0] for c in POLICIES])
def test_policy_from_spec(check: dict[str, object] | None, expected: CheckPolicy | None) -> None:
    assert policy_from_spec(check) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"image": "api:1", "ports": [{"containerPort": 8080}]}, CheckPolicy(0, 10, 5, 3, 1)),
        ({"type": "worker", "image": "w:1"}, None),
    ],
    ids=["http app", "worker without ports"],
)
def test_policy_from_a_normalised_spec(spec: dict[str, object], expected: CheckPolicy | None) -> None:
    loaded, errors, _ = validate_document({"apiVersion": "v1", "kind": "App", "metadata": {"name": "a"}, "spec": spec})
    assert loaded is not None, errors
    assert policy_from_spec(loaded.normalized.get("healthCheck")) == expected


ROUTABLE = [
    # (id, has a policy, health state, running, routable)
    ("no probe, running", False, "unknown", True, True),
    ("no probe, not running", False, "unknown", False, False),
    ("probe, not yet proven", True, "unknown", True, False),
    ("probe, healthy", True, "healthy", True, True),
    ("probe, healthy but stopped", True, "healthy", False, False),
    ("probe, unhealthy", True, "unhealthy", True, False),
]


@pytest.mark.parametrize(
    ("has_policy", "state", "running", "expected"), [c[1:] for c in ROUTABLE], ids=[c[0] for c in ROUTABLE]
)
def test_routable(has_policy: bool, state: HealthState, running: bool, expected: bool) -> None:
    policy = CheckPolicy() if has_policy else None
    assert routable(policy, ReplicaHealth(state), running) is expected


def test_in_rotation_and_unprobed_health() -> None:
    assert [in_rotation(ReplicaHealth(s)) for s in ("unknown", "healthy", "unhealthy")] == [False, True, False]
    assert unprobed_health(True).state == "healthy" and in_rotation(unprobed_health(True))
    assert not in_rotation(unprobed_health(False))
