"""The routing table nginx serves: for each app, the addresses of its healthy replicas.

Pure: building, serialising and parsing a table. The JSON form is the body of `PUT /_orchestry/routes` and
the content of the routes file nginx loads when it starts, so both carry the same validated text.
An app present with no address answers 503; an app absent from the table answers 404. An app in `wake`
(it scales to zero, workflows/wake.py) has its requests held while it has no address, within its bounds.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from orchestry.nginx import validate


def _address_key(address: str) -> tuple[int, int]:
    host, _, port = address.partition(":")
    return int(ipaddress.IPv4Address(host)), int(port)


@dataclass(frozen=True)
class RouteTable:
    generation: int
    apps: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    wake: Mapping[str, tuple[int, float]] = field(default_factory=lambda: MappingProxyType({}))  # app -> max, timeout

    def to_json(self) -> str:
        body: dict[str, Any] = {"generation": self.generation, "apps": {k: list(v) for k, v in self.apps.items()}}
        if self.wake:  # absent when empty: the same text as before scale to zero
            body["wake"] = {k: {"max": m, "timeout": t} for k, (m, t) in self.wake.items()}
        return json.dumps(body)


MAX_WAKE_QUEUE = 10_000
MAX_WAKE_SECONDS = 86_400.0


def _wake_bounds(name: str, bounds: object) -> tuple[int, float]:
    if not isinstance(bounds, Mapping):
        raise ValueError(f"wake of {name}: expected an object with max and timeout")
    top = validate.positive_int(bounds.get("max"), f"wake.max of {name}", MAX_WAKE_QUEUE)
    timeout = bounds.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_WAKE_SECONDS:
        raise ValueError(f"wake.timeout of {name}: {timeout!r} is not a number of seconds in (0, {MAX_WAKE_SECONDS:g}]")
    return top, float(timeout)


def build_route_table(
    generation: int, healthy: Mapping[str, Sequence[str]], wake: Mapping[str, Mapping[str, Any]] | None = None
) -> RouteTable:
    """Validate and normalise: apps sorted by name, addresses deduplicated and sorted (IP, then port); `wake`
    only for apps of the table."""
    validate.generation(generation)
    apps: dict[str, tuple[str, ...]] = {}
    for name in sorted(healthy):
        validate.app_name(name)
        peers = healthy[name]
        if isinstance(peers, str):  # a lone string is a sequence too; refuse it rather than split it
            raise ValueError(f"addresses of {name}: expected a list, not a string")
        addresses = {validate.address(a, f"address of {name}") for a in peers}
        apps[name] = tuple(sorted(addresses, key=_address_key))
    held: dict[str, tuple[int, float]] = {}
    for name in sorted(wake or {}):
        if name not in apps:
            raise ValueError(f"wake of {name}: not an app of the table")
        held[name] = _wake_bounds(name, (wake or {})[name])
    return RouteTable(generation, MappingProxyType(apps), MappingProxyType(held))


def parse_route_table(text: str) -> RouteTable:
    """The inverse of `RouteTable.to_json`, validating as `build_route_table` does."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("apps"), dict):
        raise ValueError("routes: expected an object with 'generation' and 'apps'")
    for name, peers in data["apps"].items():
        if not isinstance(peers, list):
            raise ValueError(f"routes: addresses of {name!r} must be a list")
    wake = data.get("wake") or {}
    if not isinstance(wake, dict):
        raise ValueError("routes: wake must be an object")
    return build_route_table(data.get("generation"), data["apps"], wake)  # type: ignore[arg-type]
