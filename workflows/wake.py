"""Scale to zero and wake on the first request: the pure part.

Which apps nginx holds requests for (`wake_entry`), and what a wake asks of the app (`wake_decision`).

Design note (issue 18). An app that may idle (minReplicas 0, auto mode) is listed in the routing table's
`wake` map with its bounds. A request for it that finds no replica in rotation is held by nginx's Lua router
(access phase, `ngx.sleep` polling the table every few ms; no reload), at most `wake.maxQueuedRequests` per
node (503 with Retry-After beyond) and at most `wake.timeoutSeconds` each (then 503). The first held request
records the app in a shared dict; every node's controller keeps one long-poll open to its own nginx
(`GET /_orchestry/wakes?after=SEQ`, controller/wake.py) that answers the moment a wake is recorded, and turns
it into a persisted scale-from-zero request in the database (a `scale` job with a scaling decision and
its reason), which is idempotent: an app already waking or running is left alone.

Why a long-poll and not the route mirror's pass: the mirror asks nginx every 250 ms, so a wake would wait
125 ms on average (250 ms at worst) before the leader hears of it; the long-poll answers within the Lua
handler's 5 ms poll of the shared dict, and costs one idle request per node. Why not Lua calling the
controller: the API may need a token, the leader may be another node, and a refused or lost call would
need its own retry in Lua; here the wake is written by this node's controller into the database, where the
leader's dispatcher (NOTIFY on PostgreSQL, its poll on SQLite) picks it up like any job, and a failover
keeps it: the job is requeued for the next leader. While requests stay held, nginx records the wake again
every second, so a write that failed (database down, this node's controller restarting) is retried.

Held requests go to the first replica in the table: the table only lists replicas that passed their health
check, so nothing reaches a replica that is not ready; a held request is sent once (a POST or a websocket
upgrade waits like a GET, before anything went upstream).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestry.workflows.scaling import policy_from_spec, scales_to_zero

DEFAULT_MAX_QUEUED = 100
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class WakeBounds:
    max_queued: int = DEFAULT_MAX_QUEUED  # requests held at once on one node
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS  # the longest one request is held

    def to_json(self) -> dict[str, Any]:
        return {"max": self.max_queued, "timeout": self.timeout_seconds}


def wake_entry(scaling: Mapping[str, Any], wake: Mapping[str, Any] | None) -> WakeBounds | None:
    """The bounds nginx holds this app's requests with, or None when it never scales to zero (its
    requests are answered 503 at once while no replica is in rotation, as before). `scaling` is the policy
    in force, `wake` the spec's `wake` section."""
    if not scales_to_zero(policy_from_spec(scaling)):
        return None
    w = wake or {}
    return WakeBounds(
        int(w.get("maxQueuedRequests", DEFAULT_MAX_QUEUED)),
        float(w.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
    )


IDLE_STATUS = "idle"
IDLE_EVENT = "app.idle"  # scaled to zero: no request and no open connection for idleSeconds (the autoscaler)
WOKE_EVENT = "app.woke"  # a wake from zero served: recorded by the scale job, with its latency

# Upper bounds (s) of the wake-latency histogram's buckets: from the first held request to a replica serving.
WAKE_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def wake_histogram(latencies: Sequence[float]) -> tuple[list[tuple[str, int]], float]:
    """Prometheus' cumulative buckets ("le" -> count, "+Inf" last) and the sum of these latencies."""
    buckets = [(repr(bound), sum(1 for x in latencies if x <= bound)) for bound in WAKE_BUCKETS]
    return [*buckets, ("+Inf", len(latencies))], float(sum(latencies))


def shown_status(status: str, desired: int, scaling: Mapping[str, Any]) -> str:
    """The status the API and CLI show: `idle` for a running app scaled to zero that wakes on a request
    (minReplicas 0, auto mode); the stored status otherwise (it stays `running`: the app is still served)."""
    if status == "running" and desired == 0 and scales_to_zero(policy_from_spec(scaling)):
        return IDLE_STATUS
    return status


@dataclass(frozen=True)
class WakeDecision:
    target: int | None  # the replica count to ask for; None: nothing to do
    reason: str


def wake_decision(
    name: str, status: str, desired: int, scaling: Mapping[str, Any], live_job: str | None, node: str, held: int
) -> WakeDecision:
    """What a wake asked by `node` (with `held` requests held there) does to the app: one replica from zero,
    or nothing (already waking or running, not running at all, not allowed to idle, or a job of another kind
    in the way: a rollout or a stop is not superseded; the wake is asked again a second later)."""
    if status != "running":
        return WakeDecision(None, f"{name} is {status}: not woken")
    if not scales_to_zero(policy_from_spec(scaling)):
        return WakeDecision(None, f"{name} does not scale to zero (minReplicas 0 in auto mode): not woken")
    if desired > 0:
        return WakeDecision(None, f"{name} already asks for {desired} replica(s)")
    if live_job is not None and live_job != "scale":
        return WakeDecision(None, f"{name} has a {live_job} job in progress: the wake waits for it")
    count = f"{held} request{'s' if held != 1 else ''}"
    return WakeDecision(1, f"{count} held by nginx on {node} while idle → 0 → 1")
