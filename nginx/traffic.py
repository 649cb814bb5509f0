"""Per-app traffic as nginx sees it: rates and a p95 from two readings of nginx's counters.

nginx's Lua router counts, per app, requests, 5xx answers, requests open now and a latency histogram, and
the requests each replica address got (`GET /_orchestry/stats`, cumulative since nginx started). One
reading says nothing about a rate; the difference of two does. `traffic(previous, current)` is pure and
tested with tables; `TrafficMeter` keeps the previous reading between calls (the metrics job's source).

Counters only grow while one nginx runs. A restart starts them from zero (`started` changes): the
difference is then taken from zero, which counts exactly the requests since the restart.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestry.nginx.manager import NginxError


@dataclass(frozen=True)
class AppCounters:
    requests: int = 0
    errors: int = 0
    active: int = 0
    buckets: tuple[int, ...] = ()
    replicas: Mapping[str, int] = field(default_factory=dict)  # requests by replica address
    latency_ms: float = 0.0  # summed response time of the counted requests


@dataclass(frozen=True)
class Counters:
    """One reading of nginx's counters, taken at `at` (monotonic seconds)."""

    at: float
    started: float | None
    bounds: tuple[float, ...]
    apps: Mapping[str, AppCounters]

    @classmethod
    def from_json(cls, body: Mapping[str, Any], at: float) -> Counters:
        """From the control endpoint's JSON; malformed entries are dropped, never guessed."""
        bounds = tuple(float(b) for b in body.get("bounds") or () if isinstance(b, int | float))
        apps: dict[str, AppCounters] = {}
        raw_apps = body.get("apps")
        for name, entry in raw_apps.items() if isinstance(raw_apps, dict) else ():
            if not isinstance(entry, dict):
                continue
            buckets = entry.get("buckets")
            replicas = entry.get("replicas")
            apps[str(name)] = AppCounters(
                requests=_count(entry.get("requests")),
                errors=_count(entry.get("errors")),
                active=_count(entry.get("active")),
                buckets=tuple(_count(b) for b in buckets) if isinstance(buckets, list) else (),
                replicas={str(k): _count(v) for k, v in replicas.items()} if isinstance(replicas, dict) else {},
                latency_ms=_amount(entry.get("latency_ms")),
            )
        started = body.get("started")
        return cls(at, float(started) if isinstance(started, int | float) else None, bounds, apps)


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else 0


def _amount(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else 0.0


@dataclass(frozen=True)
class AppTraffic:
    """One app's traffic between two readings."""

    rps: float
    p95_ms: float | None  # None: no request in the interval
    active_connections: int
    error_rate: float  # 5xx answers / requests, 0 when there were none
    requests: int
    replicas: Mapping[str, float] = field(default_factory=dict)  # rps by replica address
    histogram: tuple[int, ...] = ()  # the interval's latency buckets (see `bounds`), to merge several nginx
    bounds: tuple[float, ...] = ()
    latency_ms: float = 0.0  # the interval's summed response time (with `histogram`: a Prometheus histogram)


def percentile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket, as Prometheus'
    histogram_quantile does. The overflow bucket (above the last bound) answers the last bound."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = 0.0 if i == 0 else float(bounds[i - 1])
            return lower + (float(bounds[i]) - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


def traffic(previous: Counters | None, current: Counters) -> dict[str, AppTraffic]:
    """Per app: what happened between `previous` and `current`. Without a previous reading (or with one
    of the same instant) there are no rates yet: an empty answer, never zeros that would look like idleness."""
    if previous is None or current.at <= previous.at:
        return {}
    restarted = previous.started != current.started or previous.bounds != current.bounds
    base = Counters(previous.at, current.started, current.bounds, {}) if restarted else previous
    seconds = current.at - previous.at
    result: dict[str, AppTraffic] = {}
    for name, now in current.apps.items():
        before = base.apps.get(name, AppCounters())
        requests = _delta(now.requests, before.requests)
        errors = min(_delta(now.errors, before.errors), requests)
        width = len(now.buckets)
        old = before.buckets if len(before.buckets) == width else (0,) * width
        histogram = [_delta(a, b) for a, b in zip(now.buckets, old, strict=True)]
        p95 = percentile(current.bounds, histogram, 0.95)
        result[name] = AppTraffic(
            rps=requests / seconds,
            p95_ms=None if p95 is None else round(p95, 3),
            active_connections=now.active,
            error_rate=errors / requests if requests else 0.0,
            requests=requests,
            replicas={a: _delta(n, before.replicas.get(a, 0)) / seconds for a, n in now.replicas.items()},
            histogram=tuple(histogram),
            bounds=current.bounds,
            latency_ms=now.latency_ms - before.latency_ms if now.latency_ms >= before.latency_ms else now.latency_ms,
        )
    return result


def combine(parts: Sequence[Mapping[str, AppTraffic]]) -> dict[str, AppTraffic]:
    """The traffic of several nginx (every node routes) as one: rates, requests and open requests add up,
    the error rate is over all requests, the p95 comes from the merged histograms."""
    names = sorted({name for part in parts for name in part})
    result: dict[str, AppTraffic] = {}
    for name in names:
        apps = [part[name] for part in parts if name in part]
        if len(apps) == 1:
            result[name] = apps[0]
            continue
        requests = sum(a.requests for a in apps)
        errors = sum(round(a.error_rate * a.requests) for a in apps)
        replicas: dict[str, float] = {}
        for a in apps:
            for address, rps in a.replicas.items():
                replicas[address] = replicas.get(address, 0.0) + rps
        merged = [a for a in apps if a.histogram and a.bounds == apps[0].bounds]
        histogram = tuple(sum(counts) for counts in zip(*(a.histogram for a in merged), strict=True))
        p95 = percentile(apps[0].bounds, histogram, 0.95) if merged else None
        result[name] = AppTraffic(
            rps=sum(a.rps for a in apps),
            p95_ms=None if p95 is None else round(p95, 3),
            active_connections=sum(a.active_connections for a in apps),
            error_rate=errors / requests if requests else 0.0,
            requests=requests,
            replicas=replicas,
            histogram=histogram,
            bounds=apps[0].bounds,
            latency_ms=sum(a.latency_ms for a in merged),
        )
    return result


def _delta(now: int, before: int) -> int:
    """A counter's growth; a smaller value means it restarted from zero (counted from there)."""
    return now - before if now >= before else now


class CounterSource(Protocol):
    def traffic_counters(self) -> Mapping[str, Any]: ...


# Other nodes' latest readings: node -> (when it was taken, in seconds on a clock of that node's reports, body).
PeerReadings = Callable[[], Mapping[str, tuple[float, Mapping[str, Any]]]]


class TrafficMeter:
    """The metrics job's traffic source: each call reads this node's nginx counters (and the readings other
    nodes reported, when given `peers`: every node routes) and answers the traffic since the previous call,
    each nginx against its own previous reading, then combined. A failed read answers nothing for that
    nginx (no figures rather than zeros) and keeps its previous reading."""

    def __init__(self, source: CounterSource, clock: Any = time.monotonic, peers: PeerReadings | None = None) -> None:
        self.source = source
        self.clock = clock
        self.peers = peers
        self._previous: dict[str, Counters] = {}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, AppTraffic]:
        with self._lock:
            readings: dict[str, Counters] = {}
            with contextlib.suppress(NginxError, ValueError):  # nginx down or restarting: no figures this time
                readings[""] = Counters.from_json(self.source.traffic_counters(), self.clock())
            for node, (at, body) in (self.peers() if self.peers else {}).items():
                readings[f"node:{node}"] = Counters.from_json(body, at)
            parts = [traffic(self._previous.get(key), current) for key, current in readings.items()]
            for key, current in readings.items():
                previous = self._previous.get(key)
                if previous is None or current.at > previous.at:  # a peer's unchanged report is no new reading
                    self._previous[key] = current
            return combine([part for part in parts if part])
