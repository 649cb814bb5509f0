"""The reconcile plan of one app: which replicas to start, drain and stop, given what runs now.

Level-triggered, like a Kubernetes controller: the plan depends only on the desired state and on what
is observed, so a handler re-plans after every action and a retried job picks up where the last one
stopped. Replicas are slots (`app-1`, `app-2`, ...); a new replica takes the lowest free slot.

A running replica never stops while it may still receive traffic: it is first *drained* (taken out of
the routing table), and stopped only once nginx confirmed the table without it and its in-flight
requests had time to finish (`drained`). A dead replica is removed at once.

A new revision rolls out with a surge of one: start one replica of the new revision, wait until it is
ready (healthy and in the routing table), drain one of the old revision, and so on; the app never has
fewer ready replicas than desired. A new replica that turns unhealthy halts the rollout: the old
revision keeps serving and the plan says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestry.workflows.rollout import desired_hash

RUNNING_STATUSES = ("running", "failed")  # an app in these runs its desired replicas; in any other, none


@dataclass(frozen=True)
class Desired:
    replicas: int  # 0 when the app is stopped or being deleted
    spec_hash: str
    replace_unhealthy: bool = True  # False while the app backs off from replacing failing replicas


def desired_of(status: str, desired_replicas: int, content_hash: str, restarts: int) -> Desired:
    """What an app's row asks of its containers (the converge job's target and the reconcile sweep's drift
    check read it alike): its desired count while it runs, none otherwise; each replica carrying the hash of
    the revision in force with the restart count folded in."""
    return Desired(desired_replicas if status in RUNNING_STATUSES else 0, desired_hash(content_hash, restarts))


@dataclass(frozen=True)
class Seen:
    name: str
    slot: int
    spec_hash: str
    running: bool
    ready: bool  # serving: healthy (or no health check) and in the routing table
    draining: bool = False  # left the routing table, waiting to be stopped
    drained: bool = False  # draining, and safe to stop now
    unhealthy: bool = False  # crossed its failure threshold: to be replaced
    evicted: bool = False  # its host is being drained: replaced elsewhere like an old revision's replica


@dataclass(frozen=True)
class Container:
    """One container of the app as the engine lists it (the part the decision reads)."""

    name: str
    id: str
    slot: int
    spec_hash: str
    running: bool
    address: str | None  # host:port where it is published, if it is
    evicted: bool = False  # on a host being drained (workflows/hosts.py leaving)


@dataclass(frozen=True)
class Known:
    """What the database knows of a replica: the container it recorded, its health, its drain."""

    container_id: str | None
    health: str
    drain_started_at: datetime | None


@dataclass(frozen=True)
class Routing:
    """What this node's nginx says, observed before deciding: the addresses it serves for the app (None:
    no router, or the app is not routed), and the requests open to each address that left the table."""

    serving: frozenset[str] | None
    in_flight: Mapping[str, int | None]


NO_ROUTER = Routing(None, {})


def see(
    containers: Sequence[Container],
    known: Mapping[str, Known],
    *,
    owned: bool,
    probed: bool,
    drain_seconds: float,
    routing: Routing,
    router: bool,
    now: datetime,
) -> list[Seen]:
    """What the planner sees of each container: running, ready (healthy, or no check, and in the table),
    draining and drained (out of the table, and its requests done or `drain_seconds` waited), unhealthy.
    `owned`: the app exists (an orphan's containers are drained already: no table routes to them);
    `router`: this node routes (without nginx, nothing waits for a table)."""
    out = []
    for c in containers:
        row = known.get(c.name)
        same = row is not None and row.container_id == c.id
        health = row.health if same and row else "unknown"
        healthy = c.running and (health == "healthy" or not probed)
        serving = routing.serving
        in_table = serving is None or (c.address is not None and c.address in serving)
        draining = same and row is not None and row.drain_started_at is not None
        drained = False
        if not owned:
            draining = drained = True
        if draining and row is not None and row.drain_started_at is not None:
            left = serving is None or c.address not in serving
            waited = (now - row.drain_started_at).total_seconds()
            open_requests = routing.in_flight.get(c.address) if c.address and left else None
            drained = not router or (left and (waited >= drain_seconds or open_requests == 0))
        unhealthy = c.running and health == "unhealthy"
        out.append(
            Seen(c.name, c.slot, c.spec_hash, c.running, healthy and in_table, draining, drained, unhealthy, c.evicted)
        )
    return out


def leaving(containers: Sequence[Container], known: Mapping[str, Known]) -> list[str]:
    """Addresses of containers whose drain began: the only ones whose open requests the decision reads."""
    out = []
    for c in containers:
        row = known.get(c.name)
        if c.address and row is not None and row.container_id == c.id and row.drain_started_at is not None:
            out.append(c.address)
    return out


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
    drains: tuple[Stop, ...] = ()  # take out of rotation now, stop in a later round
    stops: tuple[Stop, ...] = ()  # stop now
    wait: str | None = None  # nothing more to do until this changes
    halt: str | None = None  # the rollout cannot go on: the job fails with this reason

    @property
    def done(self) -> bool:
        return not (self.starts or self.drains or self.stops or self.wait or self.halt)


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
    used = {s.slot for s in running}
    leaving = [s for s in running if s.draining]
    stops += [Stop(s.name, "drained") for s in leaving if s.drained]
    waits = [s.name for s in leaving if not s.drained]

    active = [s for s in running if not s.draining]
    doomed = [s for s in active if s.unhealthy and desired.replace_unhealthy]
    keep = [s for s in active if s not in doomed]

    # A replica on a host being drained is moved like an old revision's: one extra replica elsewhere, ready
    # before it drains (Swarm places nothing new on that host), so a host's drain fails no request.
    def outdated(s: Seen) -> bool:
        """Replaced before it drains: of another revision, or on a host being drained."""
        return s.spec_hash != desired.spec_hash or s.evicted

    current = sorted((s for s in keep if not outdated(s)), key=lambda s: s.slot)
    old = sorted((s for s in keep if outdated(s)), key=lambda s: s.slot)
    want = max(0, desired.replicas)
    drains = [Stop(s.name, "unhealthy: replaced") for s in doomed]
    starts: list[Start] = []

    failed_new = [s for s in active if s.unhealthy and not outdated(s)]
    if failed_new and any(s.spec_hash != desired.spec_hash for s in active):
        bad = ", ".join(s.name for s in failed_new)
        return Plan(
            stops=(*stops, *(Stop(s.name, "new revision unhealthy") for s in failed_new)),
            halt=f"the new revision did not become healthy ({bad}); the old revision keeps serving",
        )

    if len(current) >= want:
        # Scale-in takes the unhealthy first, then those not serving, then the newest (highest slot).
        extra = sorted(current, key=lambda s: (s.unhealthy, not s.ready, s.slot), reverse=True)[: len(current) - want]
        drains += [Stop(s.name, f"scale to {want}") for s in extra]
        # The old (or evicted) replicas serve until the new ones do: the app never has fewer ready than desired.
        pending = [s.name for s in current if s not in extra and not s.ready and not s.unhealthy]
        if old and want and pending:
            waits += pending
        else:
            drains += [Stop(s.name, _replaced(s) if want else f"scale to {want}") for s in old]
    elif not old:
        starts = [Start(slot, f"scale to {want}") for slot in free_slots(used, want - len(current))]
    else:  # rolling update, one extra replica at a time (those still draining count as extra)
        total = len(current) + len(old) + len([s for s in leaving if not s.drained])
        not_ready = [s.name for s in current if not s.ready and not s.unhealthy]
        if total < want + 1:
            room = min(want - len(current), want + 1 - total)
            why = "move off a drained host" if all(s.evicted for s in old) else "roll out the new revision"
            starts = [Start(slot, why) for slot in free_slots(used, room)]
        elif not_ready or any(not s.drained for s in leaving):
            waits += not_ready  # the draining ones are in `waits` already
        else:
            drains.append(Stop(old[0].name, _replaced(old[0])))
    if not (starts or drains or stops):
        # up and scale end when the new replicas serve; one that failed (kept while backing off) is not awaited
        waits += [s.name for s in current if not s.ready and not s.unhealthy and s.name not in waits]
    wait = None
    if waits and not (starts or drains or stops):
        wait = f"waiting for {', '.join(waits)}"
    return Plan(starts=tuple(starts), drains=tuple(drains), stops=tuple(stops), wait=wait)


def _replaced(s: Seen) -> str:
    return "its host is drained: replaced elsewhere" if s.evicted else "replaced by the new revision"
