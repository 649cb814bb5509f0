"""When a check's verdict is written to its replica's row (workflows.health.worth_recording), as a table: only
what says more than the time and latency of the last check, or a row left unrefreshed for RECORD_REFRESH."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestry.workflows.health import (
    RECORD_REFRESH,
    CheckPolicy,
    ReplicaHealth,
    Verdict,
    worth_recording,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = CheckPolicy(success_threshold=3)
STORED = ReplicaHealth("healthy", 5, 0, T0, "HTTP 500 an hour ago", 2.0)
LATER = T0 + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("new", "transition", "replace_it", "now", "written"),
    [
        # the same health, a later check and another latency, recently written: nothing to write
        (replace(STORED, consecutive_successes=6, last_check_at=LATER, last_latency_ms=9.0), None, False, LATER, False),
        # successes beyond successThreshold no longer count towards anything
        (replace(STORED, consecutive_successes=60), None, False, LATER, False),
        # ... but below it they do
        (replace(STORED, consecutive_successes=2), None, False, LATER, True),
        (replace(STORED, consecutive_failures=1, consecutive_successes=0), None, False, LATER, True),
        (replace(STORED, last_error="timeout"), None, False, LATER, True),
        (replace(STORED, state="unhealthy"), ("healthy", "unhealthy"), True, LATER, True),
        # a replacement asked for is written on every verdict while it holds
        (STORED, None, True, LATER, True),
        # the row was not refreshed for RECORD_REFRESH: written anyway
        (replace(STORED, consecutive_successes=6), None, False, T0 + RECORD_REFRESH, True),
        (replace(STORED, consecutive_successes=6), None, False, T0 + RECORD_REFRESH - timedelta(seconds=1), False),
    ],
)
def test_worth_recording(
    new: ReplicaHealth, transition: tuple[str, str] | None, replace_it: bool, now: datetime, written: bool
) -> None:
    verdict = Verdict(new, transition, replace_it)  # type: ignore[arg-type]
    assert worth_recording(STORED, verdict, POLICY, now) is written


def test_a_row_never_checked_is_written() -> None:
    never = ReplicaHealth()
    assert worth_recording(never, Verdict(never, None, False), POLICY, T0) is True
