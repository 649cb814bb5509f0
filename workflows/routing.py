"""The routing table (pure): for each routed app, the addresses of the replicas that may take traffic.

A replica is routable when its container runs, it is not draining, and it passes its health check (or
its app has none). Only `http` apps that are running appear; an app with no routable replica appears with
an empty list, which nginx answers with a clear 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestry.workflows.wake import WakeBounds


@dataclass(frozen=True)
class ReplicaView:
    address: str | None
    running: bool
    health: str
    draining: bool


@dataclass(frozen=True)
class RoutedApp:
    name: str
    type: str
    status: str
    probed: bool  # the app has a health check
    replicas: tuple[ReplicaView, ...]
    wake: WakeBounds | None = None  # it scales to zero: nginx holds its requests while it has no replica


def routable(app: RoutedApp, replica: ReplicaView) -> bool:
    if replica.address is None or not replica.running or replica.draining:
        return False
    return replica.health == "healthy" or not app.probed


def routing_table(apps: Sequence[RoutedApp]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for app in apps:
        if app.type != "http" or app.status not in ("running", "failed"):
            continue
        table[app.name] = sorted(r.address for r in app.replicas if routable(app, r) and r.address)
    return dict(sorted(table.items()))


def wake_table(apps: Sequence[RoutedApp]) -> dict[str, dict[str, Any]]:
    """The routed apps whose requests nginx holds (and wakes them) while they have no replica in rotation."""
    table = routing_table(apps)
    return {
        app.name: app.wake.to_json() for app in sorted(apps, key=lambda a: a.name) if app.wake and app.name in table
    }


# -- several nodes route (controller/mirror.py): what a drain must still wait for ---------------------------

Tables = Mapping[int, Mapping[str, frozenset[str]]]  # generation -> app -> addresses


def still_served(app: str, tables: Tables, generation: int, peer_generations: Sequence[int]) -> frozenset[str]:
    """The app's addresses some node's nginx may still send requests to.

    `tables` are the recent tables this leader pushed, `generation` the newest, which its own nginx serves;
    `peer_generations` what the other nodes reported serving. A node behind may serve any table from its
    generation on, so their union counts; one behind every remembered table is taken to serve the oldest."""
    behind = [g for g in peer_generations if g < generation]
    current = tables.get(generation, {})
    if not behind:
        return current.get(app, frozenset())
    oldest = min(behind)
    candidates = [table for g, table in tables.items() if g >= oldest] or [current]
    return frozenset().union(*(table.get(app, frozenset()) for table in candidates))


def in_flight_outside(inflight: Mapping[str, int], table: Mapping[str, Sequence[str]] | None) -> dict[str, int]:
    """The open-request counts a drain waits for: those to addresses the served `table` no longer routes to
    (every count when the served table is not known)."""
    if table is None:
        return dict(inflight)
    routed = {address for addresses in table.values() for address in addresses}
    return {address: n for address, n in inflight.items() if address not in routed}
