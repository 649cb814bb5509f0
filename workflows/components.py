"""Component health: when a dependency this node needs (nginx, Docker, the database) is worth a log line.

A component that goes down is reported once when it goes down, then at most once every `repeat_seconds`
while it stays down, and once when it comes back (with how long it was down). Every observation in between
changes nothing a log reader would see. Pure: the state and `now` (monotonic seconds) in, the new state and
what to say out; controller/components.py logs it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

REPEAT_SECONDS = 60.0
COMPONENTS = ("database", "docker", "nginx")

Say = Literal["down", "still down", "recovered"]


@dataclass(frozen=True)
class ComponentState:
    up: bool | None = None  # None: not observed yet
    since: float | None = None  # when it last changed (monotonic)
    error: str | None = None  # why it is down (the latest observation's reason)
    logged_at: float | None = None  # when the outage was last reported


@dataclass(frozen=True)
class Step:
    state: ComponentState
    say: Say | None  # what to log now, if anything
    down_for: float | None = None  # seconds down, for "still down" and "recovered"


def observe(
    state: ComponentState, up: bool, now: float, error: str | None = None, repeat_seconds: float = REPEAT_SECONDS
) -> Step:
    if up:
        if state.up is False:
            return Step(ComponentState(True, now), "recovered", now - (now if state.since is None else state.since))
        if state.up is None:
            return Step(ComponentState(True, now), None)
        return Step(state, None)
    if state.up is not False:  # up before, or first seen down: report it now
        return Step(ComponentState(False, now, error, now), "down")
    if state.logged_at is None or now - state.logged_at >= repeat_seconds:
        return Step(
            replace(state, error=error, logged_at=now),
            "still down",
            now - (now if state.since is None else state.since),
        )
    return Step(replace(state, error=error), None)


def overall(components: dict[str, bool | None], database_ok: bool) -> tuple[str, int]:
    """/health's verdict: `unavailable` (503) only when the database cannot be read or written (nothing works
    without it); `degraded` (200) when another component is down (apps keep running, routing or changes
    wait); `ok` otherwise. A component not observed yet (None) does not degrade."""
    if not database_ok:
        return "unavailable", 503
    if any(up is False for name, up in components.items() if name != "database"):
        return "degraded", 200
    return "ok", 200
