"""The routing table (pure): for each routed app, the addresses of the replicas that may take traffic.

A replica is routable when its container runs, it is not draining, and it passes its health check (or
its app has none). Only `http` apps that are running appear; an app with no routable replica appears with
an empty list, which nginx answers with a clear 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
