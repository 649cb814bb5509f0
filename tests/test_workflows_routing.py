"""The routing table as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.routing import ReplicaView, RoutedApp, in_flight_outside, routing_table, still_served

OK = ReplicaView("127.0.0.1:1001", True, "healthy", False)
UNKNOWN = ReplicaView("127.0.0.1:1002", True, "unknown", False)
SICK = ReplicaView("127.0.0.1:1003", True, "unhealthy", False)
DRAINING = ReplicaView("127.0.0.1:1004", True, "healthy", True)
EXITED = ReplicaView("127.0.0.1:1005", False, "healthy", False)
NO_PORT = ReplicaView(None, True, "healthy", False)


def app(
    *replicas: ReplicaView, name: str = "web", type_: str = "http", status: str = "running", probed: bool = True
) -> RoutedApp:
    return RoutedApp(name, type_, status, probed, replicas)


@pytest.mark.parametrize(
    ("apps", "expected"),
    [
        ([], {}),
        ([app(OK)], {"web": ["127.0.0.1:1001"]}),
        ([app(OK, UNKNOWN, SICK, DRAINING, EXITED, NO_PORT)], {"web": ["127.0.0.1:1001"]}),
        ([app(UNKNOWN, SICK)], {"web": []}),  # present but empty: nginx answers 503
        ([app(UNKNOWN, SICK, probed=False)], {"web": ["127.0.0.1:1002", "127.0.0.1:1003"]}),
        ([app(OK, type_="worker")], {}),
        ([app(OK, status="stopped")], {}),
        ([app(OK, status="registered")], {}),
        ([app(OK, status="deleting")], {}),
        ([app(OK, status="failed")], {"web": ["127.0.0.1:1001"]}),  # a halted rollout keeps serving
        ([app(OK, name="b"), app(DRAINING, name="a")], {"a": [], "b": ["127.0.0.1:1001"]}),
    ],
)
def test_routing_table(apps: list[RoutedApp], expected: dict[str, list[str]]) -> None:
    assert routing_table(apps) == expected


A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
TABLES = {
    5: {"web": frozenset({A, B, C})},
    6: {"web": frozenset({A, B})},  # C drained
    7: {"web": frozenset({A}), "api": frozenset({C})},  # B drained, C now serves api
}


@pytest.mark.parametrize(
    ("why", "app", "generation", "peers", "expected"),
    [
        ("alone: what this node serves", "web", 7, [], {A}),
        ("every peer caught up", "web", 7, [7, 7], {A}),
        ("a peer ahead (a newer leader's table) holds nothing back", "web", 7, [8], {A}),
        ("a peer one behind still sends to B", "web", 7, [6], {A, B}),
        ("the oldest peer decides", "web", 7, [6, 5], {A, B, C}),
        ("behind every remembered table: the oldest remembered", "web", 7, [2], {A, B, C}),
        ("an app absent from the tables", "cache", 7, [5], set()),
        ("an app that appeared: only where it is", "api", 7, [6], {C}),
        ("nothing remembered of this generation", "web", 9, [8], set()),
    ],
)
def test_still_served(why: str, app: str, generation: int, peers: list[int], expected: set[str]) -> None:
    assert still_served(app, TABLES, generation, peers) == frozenset(expected)


@pytest.mark.parametrize(
    ("inflight", "table", "expected"),
    [
        ({A: 2, B: 1}, {"web": [A, B]}, {}),  # every address still routed: nothing a drain waits for
        ({A: 2, B: 1}, {"web": [A]}, {B: 1}),
        ({A: 2, B: 1}, {}, {A: 2, B: 1}),
        ({A: 2, B: 1}, None, {A: 2, B: 1}),  # the served table unknown: every count, to be safe
        ({}, {"web": [A]}, {}),
    ],
)
def test_in_flight_outside(
    inflight: dict[str, int], table: dict[str, list[str]] | None, expected: dict[str, int]
) -> None:
    assert in_flight_outside(inflight, table) == expected
