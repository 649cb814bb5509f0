"""The routing table nginx serves: for each app, the addresses of its healthy replicas.

Pure: building, serialising and parsing a table. The JSON form is the body of `PUT /_orchestry/routes` and
the content of the routes file nginx loads when it starts, so both carry the same validated text.
An app present with no address answers 503; an app absent from the table answers 404.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from orchestry.nginx import validate


def _address_key(address: str) -> tuple[int, int]:
    host, _, port = address.partition(":")
    return int(ipaddress.IPv4Address(host)), int(port)


@dataclass(frozen=True)
class RouteTable:
    generation: int
    apps: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "apps": {k: list(v) for k, v in self.apps.items()}})


def build_route_table(generation: int, healthy: Mapping[str, Sequence[str]]) -> RouteTable:
    """Validate and normalise: apps sorted by name, addresses deduplicated and sorted (IP, then port)."""
    validate.generation(generation)
    apps: dict[str, tuple[str, ...]] = {}
    for name in sorted(healthy):
        validate.app_name(name)
        peers = healthy[name]
        if isinstance(peers, str):  # a lone string is a sequence too; refuse it rather than split it
            raise ValueError(f"addresses of {name}: expected a list, not a string")
        addresses = {validate.address(a, f"address of {name}") for a in peers}
        apps[name] = tuple(sorted(addresses, key=_address_key))
    return RouteTable(generation, MappingProxyType(apps))


def parse_route_table(text: str) -> RouteTable:
    """The inverse of `RouteTable.to_json`, validating as `build_route_table` does."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("apps"), dict):
        raise ValueError("routes: expected an object with 'generation' and 'apps'")
    for name, peers in data["apps"].items():
        if not isinstance(peers, list):
            raise ValueError(f"routes: addresses of {name!r} must be a list")
    return build_route_table(data.get("generation"), data["apps"])  # type: ignore[arg-type]
