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


# -- a host's availability: draining on request, activating after a loss ---------------------------------------
#
# Design note: an operator's drain must move replicas with 0 failed requests, which Swarm's own `drain` does
# not do (it stops the host's tasks at once and starts the replacements after). So Orchestry first *pauses* the
# host (Swarm places nothing new there, and what runs keeps serving), labels it as being drained, and lets each
# app's converge job replace the replicas on it the way a rollout does: one extra replica elsewhere, healthy and
# routed before the one on the host drains and stops. Once nothing of Orchestry's runs there, the host is set to
# Swarm's `drain`. A host Orchestry drained because it was lost is activated again once it is back: Swarm says it
# is ready, Orchestry reaches it for `ACTIVATE_AFTER_SECONDS` in a row, and the tasks it ran while cut off have
# stopped (the manager told them to; a task whose slot was rescheduled elsewhere is never the slot's current
# task, so it is never observed as a replica and never routed).

DRAINED_LABEL = "org.orchestry.drained"  # on a Swarm node Orchestry drains: why (LOST or REQUESTED)
LOST = "lost"
REQUESTED = "requested"
ACTIVATE_AFTER_SECONDS = 2.0  # a returned host reached this long without a break before it takes replicas again
GOSSIP_PORT = 7946  # every Swarm node listens here (node-to-node gossip): reached = the host is back


@dataclass(frozen=True)
class HostView:
    """A Swarm host as the decisions below read it."""

    name: str
    address: str
    state: str  # Swarm's: ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    drained_for: str | None = None  # the value of DRAINED_LABEL: Orchestry drained it, and why


def leaving(host: HostView) -> bool:
    """Replicas on this host are to move elsewhere: Swarm drains it, or Orchestry is draining it."""
    return host.availability == "drain" or host.drained_for is not None


def to_activate(hosts: Iterable[HostView], reachable_since: dict[str, float], now: float) -> list[str]:
    """The hosts Orchestry drained because they were lost and that are back: Swarm reports them ready and
    Orchestry has reached them for ACTIVATE_AFTER_SECONDS (`reachable_since`: address -> the monotonic time
    of the first success of the current run of successes). A host an operator drained stays drained."""
    return sorted(
        h.name
        for h in hosts
        if h.drained_for == LOST
        and h.state == "ready"
        and h.address in reachable_since
        and now - reachable_since[h.address] >= ACTIVATE_AFTER_SECONDS
    )


def reachable_runs(before: dict[str, float], reached: dict[str, bool], now: float) -> dict[str, float]:
    """Since when each address has been reached without a break: a failure forgets it, an address not probed
    this time is forgotten too (no longer a candidate)."""
    return {address: before.get(address, now) for address, ok in reached.items() if ok}


DrainStep = str  # "pause" | "move" | "drain" | "done"


def drain_step(host: HostView, replicas_there: int) -> DrainStep:
    """The next step of an operator's drain of `host`, level-triggered (a re-run picks up where it stopped):
    pause it (nothing new placed there), wait while its replicas move, then Swarm's drain, labelled as
    requested (a host drained because it was lost becomes the operator's: it is not activated when back)."""
    if host.drained_for != REQUESTED and host.availability != "drain":
        return "pause"
    if replicas_there:
        return "move"  # on a host Swarm drains already, Swarm moves them too; the converge jobs follow
    if host.availability != "drain" or host.drained_for != REQUESTED:
        return "drain"
    return "done"


def activate_step(host: HostView, stale_tasks: int) -> str:
    """The next step of activating `host`: "wait" while tasks it ran are still reported running though the
    manager wants them stopped (a returned host stops them within a second or two), "activate", or "done"."""
    if host.availability == "active" and host.drained_for is None:
        return "done"
    return "wait" if stale_tasks else "activate"
