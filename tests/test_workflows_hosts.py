"""Lost hosts of a swarm (pure), as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.hosts import HostHealth, lost_hosts


def h(host: str, state: str) -> HostHealth:
    return HostHealth(host, state)


@pytest.mark.parametrize(
    ("replicas", "lost"),
    [
        ([], set()),
        ([h("10.0.0.1", "healthy"), h("10.0.0.2", "unhealthy"), h("10.0.0.2", "unhealthy")], {"10.0.0.2"}),
        # one replica of the host still answers: not lost
        ([h("10.0.0.1", "healthy"), h("10.0.0.2", "unhealthy"), h("10.0.0.2", "healthy")], set()),
        # not yet judged: not lost
        ([h("10.0.0.1", "healthy"), h("10.0.0.2", "unknown")], set()),
        # every host failing: the app, not a host (nothing answers to compare with)
        ([h("10.0.0.1", "unhealthy"), h("10.0.0.2", "unhealthy")], set()),
        # the docker runtime's one host is never lost
        ([h("127.0.0.1", "unhealthy"), h("10.0.0.2", "healthy")], set()),
        ([h("10.0.0.1", "healthy"), h("10.0.0.2", "unhealthy"), h("10.0.0.3", "unhealthy")], {"10.0.0.2", "10.0.0.3"}),
    ],
)
def test_lost_hosts(replicas: list[HostHealth], lost: set[str]) -> None:
    assert lost_hosts(replicas) == lost
