"""Replica health as a pure function of its check history: when to probe, what a result means, when to replace.

Readiness and liveness in one, as in Kubernetes: a new replica starts `unknown` and out of rotation;
`successThreshold` consecutive passing checks put it in rotation (`healthy`); `failureThreshold`
consecutive failing checks take it out at once (`unhealthy`) and ask for a replacement. An unhealthy
replica that passes `successThreshold` checks in a row before it was replaced comes back. A result of the
other kind resets a counter, so only consecutive results count.

`Verdict.replace` is level-triggered, not an edge: it holds on every verdict while the replica is
unhealthy, so a replacement held back by `replacement_backoff` is not forgotten. `transition` is the edge,
for events.

Replacement backoff, per app (the numbers are the module constants below): a streak of replacements is a
run in which each one follows the previous within `STREAK_RESET` (10 minutes). The first
`FREE_REPLACEMENTS` (3) of a streak happen at once; each further one waits `BACKOFF_BASE` (30 s) after
the previous replacement, doubling each time (30 s, 60 s, 120 s, 240 s) up to `BACKOFF_CAP` (5 minutes).
So an app whose replicas die at once gets 3 replacements in its first seconds, 7 in its first ~8 minutes,
and then one every 5 minutes; 10 quiet minutes reset it. The reset is longer than the cap, so a streak
does not end just because it waited the cap.

Times are timezone-aware datetimes passed in; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

HealthState = Literal["unknown", "healthy", "unhealthy"]

# Defaults of the spec's healthCheck (../shared/app-spec.md); a normalised spec carries them all anyway.
DEFAULT_INITIAL_DELAY_SECONDS = 0.0
DEFAULT_PERIOD_SECONDS = 10.0
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 1

# A sweep that runs every periodSeconds finds the last check a few milliseconds younger than the period
# (the check started just after that sweep began); without some slack it would skip every other turn.
DUE_SLACK_FRACTION = 0.1
DUE_SLACK_MAX = timedelta(seconds=1)

FREE_REPLACEMENTS = 3
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=5)
STREAK_RESET = timedelta(minutes=10)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    at: datetime  # when the check started
    latency_ms: float | None  # time to the answer (or to the connection, for TCP); None when there was none
    detail: str  # short: "HTTP 200", "HTTP 500", "timeout after 2.0s", "connection refused"


@dataclass(frozen=True)
class CheckPolicy:
    initial_delay_seconds: float = DEFAULT_INITIAL_DELAY_SECONDS
    period_seconds: float = DEFAULT_PERIOD_SECONDS
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD


@dataclass(frozen=True)
class ReplicaHealth:
    state: HealthState = "unknown"
    consecutive_successes: int = 0
    consecutive_failures: int = 0
    last_check_at: datetime | None = None
    last_error: str | None = None  # the latest failure's detail; kept after a success, to explain flapping
    last_latency_ms: float | None = None


NEW_REPLICA = ReplicaHealth()


@dataclass(frozen=True)
class Verdict:
    health: ReplicaHealth
    transition: tuple[HealthState, HealthState] | None  # (before, after) when the state changed
    replace: bool  # the replica is unhealthy: out of rotation, to be replaced (subject to backoff)


def policy_from_spec(health_check: Mapping[str, Any] | None) -> CheckPolicy | None:
    """The check policy of a normalised spec's `healthCheck`; None when there is nothing to probe (no
    healthCheck, or no port, as for a worker without ports): a running replica then counts as healthy."""
    if not health_check or health_check.get("port") is None:
        return None
    return CheckPolicy(
        initial_delay_seconds=float(health_check.get("initialDelaySeconds", DEFAULT_INITIAL_DELAY_SECONDS)),
        period_seconds=float(health_check.get("periodSeconds", DEFAULT_PERIOD_SECONDS)),
        timeout_seconds=float(health_check.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
        failure_threshold=int(health_check.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD)),
        success_threshold=int(health_check.get("successThreshold", DEFAULT_SUCCESS_THRESHOLD)),
    )


def due(policy: CheckPolicy, health: ReplicaHealth, started_at: datetime, now: datetime) -> bool:
    """Whether to probe the replica now: not before initialDelaySeconds after its container started, then
    once per periodSeconds after the last check (minus a little slack, see DUE_SLACK_*)."""
    if now < started_at + timedelta(seconds=policy.initial_delay_seconds):
        return False
    if health.last_check_at is None:
        return True
    period = timedelta(seconds=policy.period_seconds)
    slack = min(period * DUE_SLACK_FRACTION, DUE_SLACK_MAX)
    return now >= health.last_check_at + period - slack


def health_verdict(previous: ReplicaHealth, result: ProbeResult, policy: CheckPolicy) -> Verdict:
    """The replica's health after one more check result. A result older than the last recorded check (a
    late, overtaken sweep) changes nothing."""
    if previous.last_check_at is not None and result.at < previous.last_check_at:
        return Verdict(previous, None, previous.state == "unhealthy")
    state = previous.state
    if result.ok:
        successes, failures = previous.consecutive_successes + 1, 0
        if state != "healthy" and successes >= policy.success_threshold:
            state = "healthy"
        last_error = previous.last_error
    else:
        successes, failures = 0, previous.consecutive_failures + 1
        if state != "unhealthy" and failures >= policy.failure_threshold:
            state = "unhealthy"
        last_error = result.detail
    health = replace(
        previous,
        state=state,
        consecutive_successes=successes,
        consecutive_failures=failures,
        last_check_at=result.at,
        last_error=last_error,
        last_latency_ms=result.latency_ms,
    )
    transition = (previous.state, state) if state != previous.state else None
    return Verdict(health, transition, state == "unhealthy")


RECORD_REFRESH = timedelta(seconds=60)  # a steady replica's row still gets its last check time at least this often


def worth_recording(stored: ReplicaHealth, verdict: Verdict, policy: CheckPolicy, now: datetime) -> bool:
    """Whether a verdict is written to the replica's row (`stored`: what the row holds): when it says more than
    the time and latency of the last check, i.e. a transition, a replacement asked for, a state, a failure
    count, an error, or successes still counting towards successThreshold. A row not refreshed for
    RECORD_REFRESH is written anyway, so what the API shows of a steady replica stays recent."""
    if verdict.transition is not None or verdict.replace:
        return True
    new = verdict.health
    if (stored.state, stored.consecutive_failures, stored.last_error) != (
        new.state,
        new.consecutive_failures,
        new.last_error,
    ):
        return True
    if min(stored.consecutive_successes, policy.success_threshold) != min(
        new.consecutive_successes, policy.success_threshold
    ):
        return True
    return stored.last_check_at is None or now - stored.last_check_at >= RECORD_REFRESH


def in_rotation(health: ReplicaHealth) -> bool:
    """Only a healthy replica receives traffic; unknown (not yet proven) and unhealthy ones do not."""
    return health.state == "healthy"


def unprobed_health(running: bool) -> ReplicaHealth:
    """The health of a replica of an app without a check policy: running is healthy."""
    return ReplicaHealth(state="healthy" if running else "unknown")


def routable(policy: CheckPolicy | None, health: ReplicaHealth, running: bool) -> bool:
    """Whether a replica belongs in the routing table: running, and healthy where the app has a probe."""
    if not running:
        return False
    return True if policy is None else in_rotation(health)


def replacement_backoff(recent_replacements: Sequence[datetime], now: datetime) -> timedelta | None:
    """How long an app must wait before its next replacement, or None when it may replace now.

    `recent_replacements` are the times the app's replicas were replaced, in any order; pass at least the
    last hour, so that a long streak is seen whole (a streak cut short only shortens the wait)."""
    times = sorted(t for t in recent_replacements if t <= now)
    if not times or now - times[-1] >= STREAK_RESET:
        return None
    streak = 1
    for earlier, later in zip(reversed(times[:-1]), reversed(times[1:]), strict=True):
        if later - earlier >= STREAK_RESET:
            break
        streak += 1
    if streak < FREE_REPLACEMENTS:
        return None
    # The streak's (FREE_REPLACEMENTS + k)-th replacement has happened; the next one waits base * 2**k.
    doublings = min(streak - FREE_REPLACEMENTS, 16)  # past the cap long before; keeps timedelta from overflowing
    wait = min(BACKOFF_CAP, BACKOFF_BASE * 2**doublings)
    ready = times[-1] + wait
    return ready - now if now < ready else None
