"""What registering a spec does to an app: create it, add a revision, or nothing at all.

Identity is the content hash of the normalised spec, so comments, key order and the `env`/`environment`
spelling do not make a new revision; any change of meaning does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["created", "revised", "unchanged", "refused"]


@dataclass(frozen=True)
class CurrentApp:
    revision: int
    content_hash: str
    status: str
    highest: int = 0  # the highest revision number stored: a number is never reused, even if history was trimmed


@dataclass(frozen=True)
class RegistrationPlan:
    action: Action
    revision: int
    message: str


def plan_registration(name: str, current: CurrentApp | None, content_hash: str) -> RegistrationPlan:
    if current is None:
        return RegistrationPlan("created", 1, f"app {name} created (revision 1)")
    if current.status == "deleting":
        return RegistrationPlan(
            "refused", current.revision, f"app {name} is being deleted; register it again once it is gone"
        )
    if current.content_hash == content_hash:
        return RegistrationPlan(
            "unchanged", current.revision, f"app {name} is unchanged (revision {current.revision}); nothing to do"
        )
    nxt = max(current.revision, current.highest) + 1
    return RegistrationPlan("revised", nxt, f"app {name} revised: revision {current.revision} -> {nxt}")
