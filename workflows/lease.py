"""The leader lease as pure decisions: who may take it, how long a node may act on it, when to try again.

Timing, for the defaults (lease 2.5 s, renew 0.5 s): the leader renews every 0.5 s. When it dies, its
lease runs out at most 2.5 s after its last renewal; followers do not poll blindly but sleep until the
expiry they read (by the database's clock), capped at `renew_seconds` so that a released lease (clean
shutdown) is noticed within 0.5 s. So failover after a crash takes the lease's remainder (2.0-2.5 s) plus
the new leader's start-up, and after a clean shutdown at most `renew_seconds` plus start-up.

The fence: a leader may act until its renewal's start (monotonic) + lease - margin. The database's expiry
is counted from a moment after that start, so this node's deadline always passes first; the margin
absorbs a Docker call already under way when it passes.

Times are passed in; nothing here reads a clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

LeaseAction = Literal["renew", "take", "wait"]
MIN_WAIT_SECONDS = 0.05  # never spin on the database


def lease_action(
    holder: str | None, expires_at: datetime | None, row_term: int, me: str, my_term: int | None, now: datetime
) -> LeaseAction:
    """Renew the live lease we hold, take a free or lapsed one, else wait.

    Renewal needs our own term: a lease this node gave up (it stepped down, or its process restarted) is
    taken again as a new term, so every election is a term of its own and whatever the earlier one had
    started stays fenced. A lapsed lease is never renewed, for the same reason."""
    live = holder is not None and expires_at is not None and expires_at > now
    if not live:
        return "take"
    if holder != me:
        return "wait"
    if my_term is None:
        return "take"
    return "renew" if my_term == row_term else "wait"  # another process under our name took it


def margin_seconds(lease_seconds: float) -> float:
    """The safety margin taken off the fence: a fifth of the lease, at most one second."""
    return min(1.0, lease_seconds * 0.2)


def fence_deadline(renew_began: float, lease_seconds: float) -> float:
    """Until when (on this node's monotonic clock) the leader may act after a renewal that began then."""
    return renew_began + lease_seconds - margin_seconds(lease_seconds)


def follower_wait(now: datetime, expires_at: datetime | None, renew_seconds: float) -> float:
    """Seconds until a follower tries again: right when the holder's lease runs out, or after
    `renew_seconds` if that is sooner (a release ends the lease early and must be seen soon)."""
    if expires_at is None:
        return renew_seconds
    until = (expires_at - now).total_seconds()
    return max(MIN_WAIT_SECONDS, min(renew_seconds, until))
