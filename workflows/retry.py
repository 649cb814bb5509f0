"""The job retry policy as one pure decision (as procrastinate's `get_retry_decision`).

The runner turns what a handler raised into an `Outcome` (jobs/runner.py `classify`); `decide` says what
becomes of the job, and the runner only applies it:

| outcome     | decision                                                                                      |
| ----------- | --------------------------------------------------------------------------------------------- |
| not_leader  | abandon: this node lost its lease and writes nothing more (the next leader requeues the job)   |
| wait        | wait `seconds` without counting an attempt; fail once the job has waited longer than the limit |
| permanent   | fail now, with the handler's message                                                          |
| temporary   | retry after a capped exponential backoff (or its own `seconds`); fail after the last attempt   |
| unexpected  | as temporary (engine hiccups, database blips, bugs), the message naming the exception's type   |

Time is an argument (`waited`: how long ago the job was created); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

OutcomeKind = Literal["not_leader", "wait", "permanent", "temporary", "unexpected"]
Action = Literal["abandon", "wait", "fail", "retry"]

WAIT_LIMIT = timedelta(minutes=10)  # a job that waits longer (a replica never healthy, never drained) fails
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    """What a handler's run ended with: `message` as a user reads it; `seconds` is a wait's own delay, or a
    temporary error's own retry delay (0: the default backoff)."""

    kind: OutcomeKind
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: timedelta = timedelta()  # for wait and retry: run again after this long
    error: str | None = None  # what the job row shows
    count_attempt: bool = True  # a wait gives its attempt back: nothing failed


def backoff(attempt: int, base: float = BACKOFF_BASE_SECONDS, cap: float = BACKOFF_CAP_SECONDS) -> timedelta:
    """Capped exponential backoff for temporary errors: 0.5 s, 1 s, 2 s, ... at most 30 s."""
    return timedelta(seconds=min(cap, base * 2 ** max(0, attempt - 1)))


def decide(
    outcome: Outcome, *, attempt: int, max_attempts: int, waited: timedelta, wait_limit: timedelta = WAIT_LIMIT
) -> Decision:
    """What becomes of a job whose run (its `attempt`-th, counted from 1) ended with `outcome`."""
    if outcome.kind == "not_leader":
        return Decision("abandon", error=outcome.message)
    if outcome.kind == "wait":
        if waited > wait_limit:
            return Decision("fail", error=f"gave up after waiting {wait_limit.total_seconds():.0f}s: {outcome.message}")
        return Decision(
            "wait", delay=timedelta(seconds=outcome.seconds), error=f"waiting: {outcome.message}", count_attempt=False
        )
    if outcome.kind == "permanent":
        return Decision("fail", error=outcome.message)
    if attempt >= max_attempts:
        return Decision("fail", error=f"gave up after {attempt} attempts: {outcome.message}")
    delay = timedelta(seconds=outcome.seconds) if outcome.seconds > 0 else backoff(attempt)
    return Decision("retry", delay=delay, error=outcome.message)
