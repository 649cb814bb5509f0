"""The scaling decision as a table: a metric window, the policy, the replicas and the history in; the target,
and a reason that names what decided it, out. Then a few properties over random inputs."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestry.spec import validate_document
from orchestry.workflows.scaling import (
    METRICS,
    NO_HISTORY,
    MetricWindow,
    Recommendation,
    ReplicaSample,
    ReplicaState,
    ScaleDecision,
    ScalingHistory,
    ScalingPolicy,
    decide_scale,
    outcome,
    policy_from_spec,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# The spec's defaults: min 1, max 5, 50 rps, p95 250 ms, cpu 70%, memory 75%, 100 connections, out above 80%,
# in under 30%, window 60 s, cooldown 180 s, steps +2/-1, stabilization 300 s; burst: 200% over 10 s.
DEFAULT = ScalingPolicy()
ROOMY = replace(DEFAULT, max_replicas=20)
MIN0 = replace(ROOMY, min_replicas=0)
MANUAL = replace(DEFAULT, mode="manual")


def ready(n: int, not_ready: int = 0) -> tuple[ReplicaState, ...]:
    """Replicas web-1..web-n, the last `not_ready` of them out of rotation."""
    return tuple(ReplicaState(f"web-{i}", i <= n - not_ready) for i in range(1, n + 1))


def app(span: float = 60, **values: float) -> MetricWindow:
    """A window with app-level values only: app(rps=120, p95_ms=80)."""
    return MetricWindow(span, {}, **values)


def per_replica(field: str, *values: float | None, **app_values: float) -> MetricWindow:
    """A window with one per-replica metric for web-1, web-2, ... (None: no sample for that replica)."""
    samples = {f"web-{i}": ReplicaSample(**{field: v}) for i, v in enumerate(values, 1)}
    return MetricWindow(60, samples, **app_values)


def scaled(seconds_ago: float) -> ScalingHistory:
    return ScalingHistory(last_scaled_at=NOW - timedelta(seconds=seconds_ago))


def recommended(*pairs: tuple[float, int]) -> ScalingHistory:
    """Recommendations as (seconds ago, replicas)."""
    return ScalingHistory(tuple(Recommendation(NOW - timedelta(seconds=s), n) for s, n in pairs))


@dataclass(frozen=True)
class Case:
    id: str
    window: MetricWindow
    current: int
    target: int
    reason: str  # a fragment of the expected reason
    replicas: tuple[ReplicaState, ...] | None = None  # default: `current` ready replicas
    policy: ScalingPolicy = DEFAULT
    history: ScalingHistory = NO_HISTORY
    burst: MetricWindow | None = None
    governing: str | None = None  # checked when given
    quiet: MetricWindow | None = None


CASES = [
    # -- scale-out: proportional, sized so the governing metric lands at scaleOutThresholdPct of its target
    Case("rps over 80%: proportional out", app(rps=120), 2, 3, "rps 60/replica > 80% of 50 → 2 → 3", governing="rps"),
    Case("rps exactly at 80%: no change", app(rps=80), 2, 2, "rps 40/replica is 80% of 50, between 30% and 80%"),
    Case("rps just over 80%: one more", app(rps=81), 2, 3, "rps 40.5/replica > 80% of 50 → 2 → 3"),
    Case("2 × 160% / 80% is exactly 4, not 5", app(rps=160), 2, 4, "→ 2 → 4", policy=ROOMY),
    Case(
        "a higher scaleOutThresholdPct aims higher",
        app(rps=120),
        2,
        3,
        "> 100% of 50 → 2 → 3",
        policy=replace(DEFAULT, scale_out_threshold_pct=100),
    ),
    Case(
        "the highest ratio governs: cpu over rps",
        per_replica("cpu_percent", 84, 84, rps=50),
        2,
        3,
        "cpu 84% > 80% of 70% → 2 → 3",
        governing="cpu",
    ),
    Case(
        "p95 latency alone can scale out",
        app(rps=20, p95_ms=300),
        2,
        3,
        "p95 300ms > 80% of 250ms → 2 → 3",
        governing="p95",
    ),
    Case(
        "memory percentages",
        per_replica("memory_percent", 90, 90, 90),
        3,
        5,
        "memory 90% > 80% of 75% → 3 → 5",
        policy=ROOMY,
    ),
    Case(
        "connections per replica",
        app(active_connections=300),
        2,
        4,
        "connections 150/replica > 80% of 100 → 2 → 4",
        policy=ROOMY,
    ),
    Case(
        "per-replica rps when the app-level value is missing",
        per_replica("rps", 60, 70),
        2,
        4,
        "rps 65/replica > 80% of 50 → 2 → 4",
        policy=ROOMY,
    ),
    Case(
        "the app-level rps wins over per-replica samples",
        per_replica("rps", 100, 100, rps=20),
        2,
        1,
        "rps 10/replica, 20% of 50",
    ),
    Case(
        "capped at maxScaleOutStep",
        app(rps=546),
        3,
        5,
        "rps 182/replica > 80% of 50 → 3 → 14, capped at maxScaleOutStep 2 → 5",
        policy=ROOMY,
    ),
    Case("capped at maxReplicas", app(rps=400), 4, 5, "→ 4 → 10, capped at maxReplicas 5 → 5"),
    Case("at maxReplicas: no change", app(rps=500), 5, 5, "capped at maxReplicas 5 → 5: no change"),
    # -- missing samples and not-ready replicas on the way out: they count as idle
    Case(
        "the issue's example: 1 not-ready replica counts as idle",
        app(rps=364),
        3,
        5,
        "rps 182/replica > 80% of 50 (rps 121.3/replica counting 1 not-ready replica as idle) → 3 → 10, capped at "
        "maxScaleOutStep 2 → 5",
        replicas=ready(3, not_ready=1),
        policy=ROOMY,
    ),
    Case(
        "not-ready replicas as idle reverse the direction: no change",
        app(rps=100),
        3,
        3,
        "counting 2 not-ready replicas as idle: rps 33.3/replica (66.7% of 50): no change",
        replicas=ready(3, not_ready=2),
    ),
    Case(
        "a replica without a sample as idle: no longer over",
        per_replica("cpu_percent", 98, None),
        2,
        2,
        "cpu 98% > 80% of 70%, but counting 1 replica without a sample as idle: cpu 49% (70% of 70%): no change",
    ),
    Case(
        "a replica without a sample as idle: still over",
        per_replica("cpu_percent", 140, None),
        2,
        3,
        "(cpu 70% counting 1 replica without a sample as idle) → 2 → 3",
    ),
    Case(
        "a not-ready replica's own sample is left out",
        per_replica("cpu_percent", 35, 100),
        2,
        2,
        "cpu 35% is 50% of 70%",
        replicas=ready(2, not_ready=1),
    ),
    Case(
        "a slot no replica fills yet counts as not ready",
        app(rps=100),
        3,
        3,
        "1 not-ready replica as idle",
        replicas=ready(2),
    ),
    # -- scale-in: only when every metric is under scaleInThresholdPct
    Case(
        "every metric under 30%: in, one step",
        app(rps=20),
        4,
        3,
        "every metric < 30% of its target (highest: rps 5/replica, 10% of 50) → 4 → 1, capped at maxScaleInStep 1 → 3",
    ),
    Case("rps exactly at 30%: no change", app(rps=45), 3, 3, "rps 15/replica is 30% of 50, between 30% and 80%"),
    Case("rps just under 30%: in", app(rps=44), 3, 2, "(highest: rps 14.7/replica, 29.3% of 50) → 3 → 2"),
    Case(
        "one metric inside the band holds the others",
        per_replica("cpu_percent", 35, 35, 35, rps=15),
        3,
        3,
        "cpu 35% is 50% of 70%, between 30% and 80%",
        governing="cpu",
    ),
    Case(
        "a larger maxScaleInStep",
        app(rps=30),
        6,
        3,
        "→ 6 → 1, capped at maxScaleInStep 3 → 3",
        policy=replace(ROOMY, max_scale_in_step=3),
    ),
    Case(
        "scale-in floored at minReplicas",
        app(rps=0),
        3,
        2,
        "→ 3 → 0, raised to minReplicas 2 → 2",
        policy=replace(DEFAULT, min_replicas=2),
    ),
    Case("idle at minReplicas: no change", app(rps=0), 1, 1, "raised to minReplicas 1 → 1: no change"),
    # -- to zero (minReplicas 0): only by idleness (`quiet`: the window over idleSeconds, 300 s by default)
    Case(
        "minReplicas 0: a quiet window alone stops at one replica",
        app(rps=0),
        1,
        1,
        "raised to 1 (to 0 only after idleSeconds 300) → 1: no change",
        policy=MIN0,
    ),
    Case(
        "minReplicas 0: a quiet burst window sizes a scale-in down to one",
        app(rps=5),
        2,
        1,
        "sized by the last 6s (rps 0/replica, 0% of 50) → 0, raised to 1 (to 0 only after idleSeconds 300)",
        policy=replace(MIN0, max_scale_in_step=2),
        burst=app(10, rps=0),
    ),
    Case(
        "idle for idleSeconds: straight to zero, no step",
        app(rps=0),
        3,
        0,
        "no request and no open connection for 300s (idleSeconds) → 3 → 0",
        policy=MIN0,
        quiet=app(298, rps=0, active_connections=0),
    ),
    Case(
        "idle: the cooldown and the stabilization window do not hold it",
        app(rps=0),
        2,
        0,
        "no request and no open connection for 30s (idleSeconds) → 2 → 0",
        policy=replace(MIN0, idle_seconds=30),
        history=ScalingHistory((Recommendation(NOW - timedelta(seconds=10), 4),), NOW - timedelta(seconds=40)),
        quiet=app(28, rps=0, active_connections=0),
    ),
    Case(
        "one request in idleSeconds: not idle",
        app(rps=0),
        1,
        1,
        "raised to 1 (to 0 only after idleSeconds 300)",
        policy=MIN0,
        quiet=app(298, rps=0.003, active_connections=0),
    ),
    Case(
        "an open connection (a websocket) in idleSeconds: not idle",
        app(rps=0),
        1,
        1,
        "raised to 1",
        policy=MIN0,
        quiet=app(298, rps=0, active_connections=0.01),
    ),
    Case(
        "samples that do not cover idleSeconds: not idle yet",
        app(rps=0),
        1,
        1,
        "raised to 1",
        policy=MIN0,
        quiet=app(200, rps=0, active_connections=0),
    ),
    Case(
        "unknown traffic (no figures from nginx) is not idleness",
        app(),
        1,
        1,
        "no metrics in the window",
        policy=MIN0,
        quiet=app(298),
    ),
    Case(
        "woken less than idleSeconds ago: not idle",
        app(rps=0),
        1,
        1,
        "raised to 1",
        policy=MIN0,
        history=scaled(100),
        quiet=app(298, rps=0, active_connections=0),
    ),
    Case(
        "minReplicas 1: a quiet window never idles",
        app(rps=0),
        1,
        1,
        "raised to minReplicas 1 → 1: no change",
        quiet=app(298, rps=0, active_connections=0),
    ),
    Case(
        "manual mode never idles",
        app(rps=0),
        1,
        1,
        "manual mode: stays at 1",
        policy=replace(MIN0, mode="manual"),
        quiet=app(298, rps=0, active_connections=0),
    ),
    # -- missing samples and not-ready replicas on the way in: they count as at their target
    Case(
        "a replica without a sample at its target holds a small app",
        per_replica("cpu_percent", 7, None, 7),
        3,
        3,
        "counting 1 replica without a sample as at target: cpu 28% (40% of 70%): no change",
    ),
    Case(
        "a replica without a sample at its target, large app: in",
        per_replica("cpu_percent", *[0] * 9, None),
        10,
        9,
        "(highest: cpu 0%, 0% of 70%; 10% counting 1 replica without a sample as at target) → 10 → 2, capped at "
        "maxScaleInStep 1 → 9",
        policy=ROOMY,
    ),
    Case(
        "a not-ready replica at its target holds the scale-in",
        app(rps=10),
        3,
        3,
        "counting 1 not-ready replica as at target: rps 20/replica (40% of 50): no change",
        replicas=ready(3, not_ready=1),
    ),
    # -- stabilization: scale in only to the highest recent recommendation
    Case(
        "stabilization: a recent higher recommendation holds",
        app(rps=20),
        4,
        4,
        "held at 4 by the highest recommendation of the last 300s: no change",
        history=recommended((100, 4)),
    ),
    Case(
        "stabilization: in only to the highest recent one",
        app(rps=20),
        5,
        4,
        "→ 5 → 1, held at 4 by the highest recommendation of the last 300s",
        history=recommended((200, 4), (50, 2)),
    ),
    Case(
        "stabilization: a recommendation 300 s old has left the window",
        app(rps=20),
        4,
        3,
        "capped at maxScaleInStep 1 → 3",
        history=recommended((300, 4)),
    ),
    Case("stabilization does not slow a scale-out", app(rps=120), 2, 3, "→ 2 → 3", history=recommended((10, 1))),
    # -- cooldown
    Case(
        "cooldown holds a scale-out",
        app(rps=130),
        2,
        2,
        "rps 65/replica > 80% of 50 → 2 → 4; no change: in cooldown, last scaled 60s ago (cooldownSeconds 180)",
        history=scaled(60),
    ),
    Case("cooldown over at exactly cooldownSeconds", app(rps=130), 2, 4, "→ 2 → 4", history=scaled(180)),
    Case(
        "cooldown holds a scale-in",
        app(rps=20),
        4,
        4,
        "no change: in cooldown, last scaled 100s ago",
        history=scaled(100),
    ),
    Case("min/max bind through the cooldown", app(rps=0), 7, 5, "7 above maxReplicas 5 → 5", history=scaled(10)),
    Case(
        "a raised minReplicas binds at once, past the step",
        app(rps=0),
        1,
        4,
        "1 below minReplicas 4 → 4",
        policy=replace(ROOMY, min_replicas=4),
    ),
    # -- burst: a surge in the last seconds scales out at once; scale-in stays patient
    Case(
        "burst at 400% scales out through the cooldown",
        app(rps=30),
        1,
        3,
        "burst in the last 6s: rps 200/replica > 80% of 50 → 1 → 5, capped at maxScaleOutStep 2 → 3 (cooldown skipped)",
        history=scaled(60),
        burst=app(10, rps=200),
    ),
    Case(
        "burst at 180% waits for the main window",
        app(rps=60),
        2,
        2,
        "rps 30/replica is 60% of 50",
        burst=app(10, rps=180),
    ),
    Case(
        "burst at exactly 200% counts",
        app(rps=60),
        2,
        4,
        "burst in the last 6s: rps 100/replica",
        history=scaled(30),
        burst=app(10, rps=200),
    ),
    Case(
        "burst while the last step's replicas start: the next step, idle ones counted",
        app(rps=50),
        3,
        5,
        "(rps 66.7/replica counting 2 not-ready replicas as idle) → 3 → 5 (cooldown skipped)",
        replicas=ready(3, not_ready=2),
        history=scaled(5),
        burst=app(10, rps=200),
        policy=ROOMY,
    ),
    Case(
        "main window asks for more than the burst",
        app(rps=400),
        2,
        4,
        "burst in the last 6s, sized by the main window: rps 200/replica > 80% of 50 → 2 → 10, capped at "
        "maxScaleOutStep 2 → 4 (cooldown skipped)",
        policy=ROOMY,
        history=scaled(30),
        burst=app(10, rps=300),
    ),
    Case(
        "a busy burst window vetoes a scale-in",
        app(rps=10),
        3,
        3,
        "→ 3 → 1, capped at maxScaleInStep 1 → 2; no change: the last 6s show rps 20/replica, 40% of 50",
        burst=app(10, rps=60),
    ),
    Case("a quiet burst window lets the scale-in go", app(rps=10), 3, 2, "→ 3 → 1", burst=app(10, rps=0)),
    Case(
        "a scale-in is sized by the load now, not by a mean that still carries the load that ended",
        app(rps=70),
        5,
        1,
        "rps 14/replica, 28% of 50) → 5 → 2; sized by the last 6s (rps 0/replica, 0% of 50) → 0, raised to "
        "minReplicas 1 → 1",
        policy=replace(DEFAULT, max_scale_in_step=5),
        burst=app(10, rps=0),
    ),
    Case(
        "a busier (still quiet) burst window sizes a scale-in higher",
        app(rps=10),
        5,
        2,
        "→ 5 → 1; sized by the last 6s (rps 14/replica, 28% of 50) → 2",
        policy=replace(DEFAULT, max_scale_in_step=5),
        burst=app(10, rps=70),
    ),
    Case(
        "a burst-sized scale-in is still held by the stabilization window",
        app(rps=70),
        5,
        4,
        "sized by the last 6s (rps 0/replica, 0% of 50) → 0, raised to minReplicas 1 → 1, held at 4 by the highest "
        "recommendation of the last 300s",
        policy=replace(DEFAULT, max_scale_in_step=5),
        history=recommended((100, 4), (400, 5)),
        burst=app(10, rps=0),
    ),
    Case(
        "a quiet burst window never scales in on its own",
        app(rps=100),
        3,
        3,
        "rps 33.3/replica is 66.7% of 50",
        burst=app(10, rps=0),
    ),
    # -- missing data
    Case("no data at all: no change", app(), 3, 3, "no metrics in the window: no change"),
    Case("no data: no scale-in even far above min", app(), 4, 4, "no metrics in the window", policy=ROOMY),
    Case("no ready replica: no data", app(rps=300), 2, 2, "no metrics in the window", replicas=ready(2, not_ready=2)),
    Case(
        "a window too short for a scale-in",
        app(20, rps=10),
        3,
        3,
        "no change: the samples cover 20s, less than half of windowSeconds 60",
    ),
    Case("a short window still scales out", app(5, rps=130), 2, 4, "→ 2 → 4"),
    # -- manual mode
    Case("manual mode is not autoscaled", app(rps=500), 2, 2, "manual mode: stays at 2", policy=MANUAL),
    Case("manual mode above maxReplicas is brought inside", app(), 8, 5, "8 above maxReplicas 5 → 5", policy=MANUAL),
    Case(
        "manual mode below minReplicas is brought inside",
        app(),
        1,
        2,
        "1 below minReplicas 2 → 2",
        policy=replace(MANUAL, min_replicas=2),
    ),
    # -- zero replicas
    Case("zero replicas with minReplicas 1: raised at once", app(), 0, 1, "0 below minReplicas 1 → 1"),
    Case("zero replicas and no requests: stays at zero", app(rps=0), 0, 0, "the next request wakes", policy=MIN0),
    Case(
        "scaled to zero, its replica not yet draining, slow requests in the window: stays at zero",
        app(rps=2, p95_ms=1400),
        0,
        0,
        "no replicas: the next request wakes the app",
        replicas=ready(1),
        policy=MIN0,
    ),
    Case(
        "zero replicas and a window that still holds traffic: stays at zero (no flap after going idle)",
        app(rps=200),
        0,
        0,
        "no replicas: the next request wakes the app (nginx holds it): no change",
        policy=MIN0,
        burst=app(6, rps=50),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    replicas = case.replicas if case.replicas is not None else ready(case.current)
    d = decide_scale(case.window, case.policy, case.current, replicas, NOW, case.history, case.burst, case.quiet)
    assert d.target == case.target, d.reason
    assert d.idle == (case.target == 0 and case.current > 0)
    assert case.reason in d.reason
    assert d.current == case.current
    expected = "out" if case.target > case.current else "in" if case.target < case.current else "none"
    assert d.direction == expected
    if case.governing is not None:
        assert d.governing == case.governing
    assert set(d.ratios) == set(METRICS)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_ratios_of_every_metric() -> None:
    window = MetricWindow(60, {"web-1": ReplicaSample(cpu_percent=35, memory_percent=15)}, rps=25, p95_ms=500)
    d = decide_scale(window, DEFAULT, 1, ready(1), NOW)
    assert d.ratios == {"cpu": 0.5, "memory": 0.2, "rps": 0.5, "connections": None, "p95": 2.0}
    assert (d.governing, d.target) == ("p95", 3)


def test_recommended_is_the_metrics_alone() -> None:
    """Held by the cooldown and capped by the step, the recommendation still says what the load needs."""
    held = decide_scale(app(rps=546), ROOMY, 3, ready(3), NOW, scaled(10))
    assert (held.target, held.recommended) == (3, 14)
    quiet = decide_scale(app(rps=60), ROOMY, 3, ready(3), NOW)
    assert (quiet.target, quiet.recommended) == (3, 3)  # inside the band: the current count, for stabilization


def test_a_burst_decision_says_so() -> None:
    d = decide_scale(app(rps=30), DEFAULT, 1, ready(1), NOW, burst=app(10, rps=200))
    assert d.burst and d.direction == "out"
    assert not decide_scale(app(rps=120), DEFAULT, 2, ready(2), NOW, burst=app(10, rps=90)).burst


# -- properties over random inputs ----------------------------------------------------------------------------


def _random_policy(rng: random.Random) -> ScalingPolicy:
    low = rng.randint(0, 4)
    return replace(
        DEFAULT,
        mode=rng.choice(["auto", "auto", "auto", "manual"]),
        min_replicas=low,
        max_replicas=rng.randint(max(low, 1), 12),
        scale_out_threshold_pct=rng.choice([60, 80, 100]),
        scale_in_threshold_pct=rng.choice([10, 30, 50]),
        max_scale_out_step=rng.randint(1, 4),
        max_scale_in_step=rng.randint(1, 3),
        cooldown_seconds=rng.choice([0, 180]),
    )


def _maybe(rng: random.Random, high: float) -> float | None:
    return None if rng.random() < 0.2 else rng.uniform(0, high)


def _random_inputs(rng: random.Random) -> tuple[MetricWindow, int, tuple[ReplicaState, ...], ScalingHistory]:
    current = rng.randint(0, 14)
    replicas = tuple(ReplicaState(f"web-{i}", rng.random() < 0.8) for i in range(rng.randint(0, current)))
    samples = {
        r.name: ReplicaSample(_maybe(rng, 200), _maybe(rng, 100), _maybe(rng, 150), _maybe(rng, 600), _maybe(rng, 200))
        for r in replicas
        if rng.random() < 0.9
    }
    window = MetricWindow(rng.choice([5, 60]), samples, _maybe(rng, 800), _maybe(rng, 600), _maybe(rng, 900))
    history = ScalingHistory(
        tuple(Recommendation(NOW - timedelta(seconds=rng.uniform(0, 600)), rng.randint(0, 14)) for _ in range(3)),
        None if rng.random() < 0.5 else NOW - timedelta(seconds=rng.uniform(0, 400)),
    )
    return window, current, replicas, history


def _decide_random(seed: int) -> tuple[ScalingPolicy, int, ScaleDecision]:
    rng = random.Random(seed)
    policy = _random_policy(rng)
    window, current, replicas, history = _random_inputs(rng)
    burst = None if rng.random() < 0.5 else _random_inputs(rng)[0]
    return policy, current, decide_scale(window, policy, current, replicas, NOW, history, burst)


@pytest.mark.parametrize("seed", range(5))
def test_target_always_within_min_and_max(seed: int) -> None:
    for n in range(400):
        policy, current, d = _decide_random(seed * 1000 + n)
        assert policy.min_replicas <= d.target <= policy.max_replicas, d
        assert policy.min_replicas <= d.recommended <= policy.max_replicas, d
        if policy.min_replicas <= current <= policy.max_replicas:  # inside: the steps bound every move
            assert current - policy.max_scale_in_step <= d.target <= current + policy.max_scale_out_step, d
            if policy.mode == "manual":
                assert d.target == current
        assert d.direction == ("out" if d.target > current else "in" if d.target < current else "none")


@pytest.mark.parametrize("seed", range(5))
def test_a_stable_load_changes_nothing(seed: int) -> None:
    """Every metric between the thresholds, on every replica: no change, whatever else."""
    rng = random.Random(seed)
    for _ in range(200):
        policy = replace(
            ROOMY, scale_in_threshold_pct=rng.choice([10, 30]), scale_out_threshold_pct=rng.choice([60, 80])
        )
        current = rng.randint(1, 20)
        low, high = policy.scale_in_threshold_pct / 100 + 0.01, policy.scale_out_threshold_pct / 100 - 0.01
        per = {m: rng.uniform(low, high) for m in ("cpu", "memory", "rps", "conn", "p95")}
        samples = {f"web-{i}": ReplicaSample(per["cpu"] * 70, per["memory"] * 75) for i in range(1, current + 1)}
        window = MetricWindow(60, samples, per["rps"] * 50 * current, per["p95"] * 250, per["conn"] * 100 * current)
        d = decide_scale(window, policy, current, ready(current), NOW)
        assert (d.direction, d.target, d.recommended) == ("none", current, current), d.reason


@pytest.mark.parametrize("seed", range(5))
def test_one_load_never_asks_for_both_directions(seed: int) -> None:
    """No flapping: after a move, the same total load at the new count (all ready, cooldown over) never asks
    to move back."""
    rng = random.Random(seed)
    for _ in range(300):
        policy = replace(
            ROOMY,
            scale_out_threshold_pct=rng.choice([50, 80, 100]),
            scale_in_threshold_pct=rng.choice([10, 30, 45]),
            max_scale_out_step=20,
            max_scale_in_step=20,
            stabilization_window_seconds=0,
        )
        total_rps, current = rng.uniform(0, 900), rng.randint(1, 20)
        first = decide_scale(app(rps=total_rps), policy, current, ready(current), NOW)
        if first.direction == "none" or first.target == 0:
            continue
        again = decide_scale(app(rps=total_rps), policy, first.target, ready(first.target), NOW)
        assert again.direction in ("none", first.direction), (first.reason, again.reason)


def test_more_load_never_means_fewer_replicas() -> None:
    targets = [decide_scale(app(rps=r), ROOMY, 4, ready(4), NOW).target for r in range(0, 1000, 7)]
    assert targets == sorted(targets)


# -- the policy from a spec -----------------------------------------------------------------------------------


def test_policy_defaults() -> None:
    assert policy_from_spec(None) == policy_from_spec({}) == ScalingPolicy()


def test_policy_from_a_spec_section() -> None:
    section = {
        "mode": "manual",
        "minReplicas": 2,
        "maxReplicas": 9,
        "targetRPSPerReplica": 120,
        "maxP95LatencyMs": 400,
        "maxCPUPercent": 60,
        "maxMemoryPercent": 85,
        "maxConnPerReplica": 30,
        "scaleOutThresholdPct": 90,
        "scaleInThresholdPct": 20,
        "windowSeconds": 30,
        "cooldownSeconds": 60,
        "maxScaleOutStep": 4,
        "maxScaleInStep": 2,
        "stabilizationWindowSeconds": 120,
    }
    assert policy_from_spec(section) == ScalingPolicy("manual", 2, 9, 120, 400, 60, 85, 30, 90, 20, 30, 60, 4, 2, 120)


def test_policy_from_a_normalised_spec() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "App",
        "metadata": {"name": "a"},
        "spec": {"image": "api:1", "ports": [{"containerPort": 8080}]},
        "scaling": {"maxReplicas": 8, "targetRPSPerReplica": 75},
    }
    loaded, errors, _ = validate_document(doc)
    assert loaded is not None, errors
    assert policy_from_spec(loaded.normalized["scaling"]) == replace(
        ScalingPolicy(), max_replicas=8, target_rps_per_replica=75
    )


def decision_to(direction: str, target: int) -> ScaleDecision:
    return ScaleDecision(3, target, direction, {"rps": 1.0}, "rps", "why", target)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("why", "direction", "target", "mode", "fast", "job", "store", "act", "stored_target"),
    [
        ("out: stored and acted on", "out", 5, "auto", False, None, True, True, 5),
        ("in: stored and acted on", "in", 2, "auto", False, None, True, True, 2),
        ("no change in auto mode: stored (stabilization reads it)", "none", 3, "auto", False, None, True, False, 3),
        ("no change in manual mode: nothing to keep", "none", 3, "manual", False, None, False, False, 3),
        ("manual mode brought inside min/max: acted on", "in", 2, "manual", False, None, True, True, 2),
        ("fast pass: a scale-out acts", "out", 5, "auto", True, None, True, True, 5),
        ("fast pass: a scale-in waits for the patient pass", "in", 2, "auto", True, None, False, False, 2),
        ("fast pass: no change, nothing stored", "none", 3, "auto", True, None, False, False, 3),
        (
            "a rollout in progress holds the change, said in the reason",
            "out",
            5,
            "auto",
            False,
            (7, "deploy"),
            True,
            False,
            3,
        ),
        ("a stop in progress holds a scale-in too", "in", 2, "auto", False, (8, "stop"), True, False, 3),
        ("a scale job waiting or running: joined", "out", 5, "auto", False, (9, "scale"), True, True, 5),
    ],
)
def test_outcome(
    why: str,
    direction: str,
    target: int,
    mode: str,
    fast: bool,
    job: tuple[int, str] | None,
    store: bool,
    act: bool,
    stored_target: int,
) -> None:
    result = outcome(decision_to(direction, target), mode, fast=fast, job=job)  # type: ignore[arg-type]
    assert (result.store, result.act, result.decision.target) == (store, act, stored_target)
    if job is not None and job[1] != "scale":
        assert result.decision.direction == "none" and f"waiting for job {job[0]} ({job[1]})" in result.decision.reason
