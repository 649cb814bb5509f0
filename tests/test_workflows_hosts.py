"""Lost hosts of a swarm (pure), as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.hosts import HostHealth, lost_hosts

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def ok(host: str) -> HostHealth:
    return HostHealth(host, "healthy")


def cut(host: str) -> HostHealth:
    """Unhealthy, its last probe unable to reach the host (no route)."""
    return HostHealth(host, "unhealthy", unreachable=True)


def slow(host: str) -> HostHealth:
    """Unhealthy by timeouts or bad answers: an overloaded host or a broken replica, not a lost host."""
    return HostHealth(host, "unhealthy")


@pytest.mark.parametrize(
    ("replicas", "lost"),
    [
        ([], set()),
        ([ok(A), cut(B), cut(B)], {B}),
        ([ok(A), cut(B), cut(C)], {B, C}),
        # one replica of the host still answers: not lost
        ([ok(A), cut(B), ok(B)], set()),
        # timeouts and bad answers are not a lost host (an overloaded one gives them too)
        ([ok(A), slow(B), slow(B)], set()),
        ([ok(A), cut(B), slow(B)], set()),
        # an unreachable probe not yet past the failure threshold: not lost yet
        ([ok(A), HostHealth(B, "healthy", unreachable=True)], set()),
        ([ok(A), HostHealth(B, "unknown", unreachable=True)], set()),
        # nothing answers anywhere: nothing to compare with, nothing drained
        ([cut(A), cut(B)], set()),
        # the docker runtime's one host is never lost
        ([HostHealth("127.0.0.1", "unhealthy", unreachable=True), ok(B)], set()),
    ],
)
def test_lost_hosts(replicas: list[HostHealth], lost: set[str]) -> None:
    assert lost_hosts(replicas) == lost
