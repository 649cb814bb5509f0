"""Resource figures of replicas and apps, as pure functions of raw counters.

The kernel (and Docker's stats API) report CPU as a cumulative counter of CPU time, so a percentage needs
two readings: the collector keeps each container's previous `Usage` in memory and hands both here. CPU is a
percentage of the replica's CPU limit, or of one core when it has none (a busy replica without a limit on
a 4-core host can then read up to 400%). Memory is a percentage of the replica's memory limit, or of the
host's memory when it has none. Anything that cannot be computed honestly (no previous reading, a counter
that went backwards, no time elapsed) is None, never 0: a missing figure must not look like an idle one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

UNLIMITED_BYTES = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2^63-1
# The figures of a metric sample, in the columns' order (models.metrics.MetricSample).
FIGURES = ("cpu_percent", "memory_percent", "rps", "p95_ms", "active_connections", "error_rate", "ready_replicas")


@dataclass(frozen=True)
class Usage:
    """One reading of a container's counters, from its cgroup files or Docker's stats API."""

    at: float  # seconds on the reader's monotonic clock: only differences between readings matter
    cpu_usec: int  # CPU time used since the container started, all cores summed
    memory_bytes: int  # in use, without the inactive file cache the kernel reclaims first (as `docker stats`)
    memory_limit: int | None = None  # bytes; None: no limit
    cpu_limit: float | None = None  # cores; None: no limit


def cpu_percent(prev: Usage | None, cur: Usage) -> float | None:
    """CPU used between two readings as a percentage of the limit (of one core without one)."""
    if prev is None:
        return None
    elapsed = cur.at - prev.at
    used = cur.cpu_usec - prev.cpu_usec
    if elapsed <= 0 or used < 0:  # same instant, or a counter that restarted: no honest figure
        return None
    cores = cur.cpu_limit if cur.cpu_limit is not None and cur.cpu_limit > 0 else 1.0
    return used / 1e6 / elapsed / cores * 100.0


def memory_percent(cur: Usage, host_bytes: int | None) -> float | None:
    """Memory in use as a percentage of the limit (of the host's memory without one)."""
    limit = cur.memory_limit if cur.memory_limit is not None and 0 < cur.memory_limit < UNLIMITED_BYTES else None
    denominator = limit if limit is not None else host_bytes
    if not denominator or denominator <= 0 or cur.memory_bytes < 0:
        return None
    return cur.memory_bytes / denominator * 100.0


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that exist; None when none does (an app without data is not an idle app)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def period_means(
    rows: Iterable[tuple[int, Sequence[float | None]]], start: datetime, seconds: float
) -> list[dict[str, object]]:
    """The app rows of one period (`start`, `seconds` long) as one row per app: each figure's mean over the
    samples that have it (None where none has), `samples` the number of rows it stands for, taken at the
    period's middle. `rows`: (app id, the figures in FIGURES' order). Ready replicas stay a whole number.

    A mean of p95s is not the period's p95; it is what a chart of the day draws, and the retention's point is
    to keep that chart, not to recompute latencies (the cumulative histogram keeps those)."""
    by_app: dict[int, list[Sequence[float | None]]] = {}
    for app_id, figures in rows:
        by_app.setdefault(app_id, []).append(figures)
    middle = start + timedelta(seconds=seconds / 2)
    out: list[dict[str, object]] = []
    for app_id, series in sorted(by_app.items()):
        row: dict[str, object] = {"app_id": app_id, "replica_name": None, "taken_at": middle, "samples": len(series)}
        for i, name in enumerate(FIGURES):
            row[name] = mean(figures[i] for figures in series)
        if row["ready_replicas"] is not None:
            row["ready_replicas"] = round(float(row["ready_replicas"]))  # type: ignore[arg-type]
        out.append(row)
    return out


@dataclass(frozen=True)
class LatencyHistogram:
    """An app's request latencies since Orchestry started counting them: requests per bucket (`bounds` are
    the buckets' upper bounds in ms; one more count for the overflow) and their summed seconds."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum_seconds: float = 0.0

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, requests at or below it), then (inf, all requests): Prometheus' `le`."""
        out, seen = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=False):
            seen += count
            out.append((bound / 1000.0, seen))
        return out


def accumulate(
    stored: LatencyHistogram | None, bounds: tuple[float, ...], counts: tuple[int, ...], latency_ms: float
) -> LatencyHistogram | None:
    """`stored` plus one interval's requests, so the histogram only grows (a counter). New bucket bounds
    start it again from this interval (Prometheus reads that as a counter reset). None: nothing to keep."""
    if len(counts) != len(bounds) + 1 or any(c < 0 for c in counts):
        return stored
    seconds = max(0.0, latency_ms) / 1000.0
    if stored is None or stored.bounds != bounds or len(stored.counts) != len(counts):
        return LatencyHistogram(bounds, counts, seconds)
    return LatencyHistogram(
        bounds, tuple(a + b for a, b in zip(stored.counts, counts, strict=True)), stored.sum_seconds + seconds
    )
