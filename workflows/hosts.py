"""Which hosts of a swarm are lost (pure): a host whose every probed replica is unhealthy while another host's
replicas answer.

Design note: Swarm marks a host down only after missing its heartbeats for ~15-20 s, and until then may place
new tasks there. Orchestry's probes see an unreachable host within a failure threshold (about a second with
a 0.5 s period), so the leader drains the host in Swarm as soon as they agree it is lost: the replacements
of its replicas then go to the hosts that answer. One app's bug fails its replicas on every host alike, so a
host counts as lost only while some other host's replicas pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"  # the docker runtime's one host: never drained


@dataclass(frozen=True)
class HostHealth:
    host: str  # the replica's host address
    state: str  # its health after this sweep: healthy, unhealthy, unknown


def lost_hosts(replicas: Iterable[HostHealth]) -> frozenset[str]:
    by_host: dict[str, list[str]] = defaultdict(list)
    for replica in replicas:
        if replica.host and replica.host != LOOPBACK:
            by_host[replica.host].append(replica.state)
    answering = {host for host, states in by_host.items() if "healthy" in states}
    if not answering:
        return frozenset()
    return frozenset(host for host, states in by_host.items() if all(s == "unhealthy" for s in states))
