"""Which hosts of a swarm are lost (pure): a host whose every probed replica is unhealthy while another host's
replicas answer.

Design note: Swarm marks a host down only after missing its heartbeats for ~15-20 s, and until then may place
new tasks there. Orchestry's probes see an unreachable host within a failure threshold (about a second with
a 0.5 s period), so the leader drains the host in Swarm as soon as they agree it is lost: the replacements
of its replicas then go to the hosts that answer. A host counts as lost only when every replica probed there
is unhealthy and its last probe could not reach the host at all (no route, network down or unreachable: not
a timeout, a refusal or a bad answer, which an overloaded host or a crashed replica also give), and only
while some other host's replicas pass. A host that drops packets silently shows as timeouts: it is left to
Swarm to mark down.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"  # the docker runtime's one host: never drained
# What a probe reports when the host itself cannot be reached (probe/prober.py's details: the OS's words).
UNREACHABLE = frozenset({"No route to host", "Network is unreachable", "Network is down", "Host is unreachable"})


@dataclass(frozen=True)
class HostHealth:
    host: str  # the replica's host address
    state: str  # its health after this sweep: healthy, unhealthy, unknown
    unreachable: bool = False  # its last probe could not reach its host at all


def lost_hosts(replicas: Iterable[HostHealth]) -> frozenset[str]:
    by_host: dict[str, list[HostHealth]] = defaultdict(list)
    for replica in replicas:
        if replica.host and replica.host != LOOPBACK:
            by_host[replica.host].append(replica)
    answering = {host for host, seen in by_host.items() if any(r.state == "healthy" for r in seen)}
    if not answering:
        return frozenset()
    return frozenset(
        host for host, seen in by_host.items() if all(r.state == "unhealthy" and r.unreachable for r in seen)
    )
