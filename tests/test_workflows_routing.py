"""The routing table as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.routing import ReplicaView, RoutedApp, routing_table

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
