"""The reconcile plan of one app: which replicas to start and which to stop, given what runs now.

Level-triggered, like a Kubernetes controller: the plan depends only on the desired state and on what
the engine reports, so a handler re-plans after every action and a retried job picks up where the last
one stopped. Replicas are slots (`app-1`, `app-2`, ...); a new replica takes the lowest free slot.

A new revision rolls out with a surge of one: start one replica of the new revision, wait until it is
ready, stop one of the old revision, and so on; the app never runs fewer ready replicas than desired.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Desired:
    replicas: int  # 0 when the app is stopped or being deleted
    spec_hash: str


@dataclass(frozen=True)
class Seen:
    name: str
    slot: int
    spec_hash: str
    running: bool
    ready: bool  # running and, where the app has a health check, passing it


@dataclass(frozen=True)
class Start:
    slot: int
    reason: str


@dataclass(frozen=True)
class Stop:
    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    starts: tuple[Start, ...] = ()
    stops: tuple[Stop, ...] = ()
    wait: str | None = None  # nothing to do until this changes (e.g. a new replica is not ready yet)

    @property
    def done(self) -> bool:
        return not self.starts and not self.stops and self.wait is None


def free_slots(used: set[int], count: int) -> list[int]:
    slots: list[int] = []
    n = 1
    while len(slots) < count:
        if n not in used:
            slots.append(n)
        n += 1
    return slots


def plan_app(desired: Desired, seen: list[Seen]) -> Plan:
    stops = [Stop(s.name, "not running") for s in seen if not s.running]
    stops += [Stop(s.name, "not a valid slot") for s in seen if s.running and s.slot < 1]
    running = [s for s in seen if s.running and s.slot >= 1]
    current = sorted((s for s in running if s.spec_hash == desired.spec_hash), key=lambda s: s.slot)
    old = sorted((s for s in running if s.spec_hash != desired.spec_hash), key=lambda s: s.slot)
    want = max(0, desired.replicas)
    used = {s.slot for s in running}

    if len(current) >= want:
        extra = sorted(current, key=lambda s: s.slot, reverse=True)[: len(current) - want]
        stops += [Stop(s.name, f"scale to {want}") for s in extra]
        stops += [Stop(s.name, "replaced by the new revision" if want else f"scale to {want}") for s in old]
        return Plan(stops=tuple(stops))

    missing = want - len(current)
    if not old:
        return Plan(
            starts=tuple(Start(slot, f"scale to {want}") for slot in free_slots(used, missing)), stops=tuple(stops)
        )

    # Rolling update, one extra replica at a time.
    total = len(current) + len(old)
    if total < want + 1:
        room = min(missing, want + 1 - total)
        return Plan(
            starts=tuple(Start(slot, "roll out the new revision") for slot in free_slots(used, room)),
            stops=tuple(stops),
        )
    not_ready = [s.name for s in current if not s.ready]
    if not_ready:
        return Plan(stops=tuple(stops), wait=f"waiting for {', '.join(not_ready)} to be ready")
    return Plan(stops=(*stops, Stop(old[0].name, "replaced by the new revision")))
