"""The autoscaler's decision: how many replicas an app should run, as a pure function of its metric window.

Proportional, like the Kubernetes HPA: each metric has a target (the policy's `targetRPSPerReplica`,
`maxCPUPercent`, ...) and a ratio, its value per ready replica over that target. The replica count that
carries the load is ceil(current × ratio / aim), and the highest such count wins. The aim is the
scale-out threshold (`scaleOutThresholdPct` of the target), not the target itself, as in Knative's target
utilisation: a scale-out then always adds at least one replica and leaves every metric at or under the
threshold, and a scale-in never lands above it, so the next evaluation does not undo the last one.

Where the HPA has one tolerance band (±10% around its target), a policy here has a wider, asymmetric one:
nothing changes while the highest ratio is at or under `scaleOutThresholdPct` and some ratio is at or
over `scaleInThresholdPct`. Out when any metric passes the first; in only when every metric is under the
second. Both directions size with the same formula, so one load never asks for both.

Missing data and not-ready replicas, as the HPA handles them: the ratios are those of the ready replicas
with a sample. Before acting, the others are filled in against the action: on a scale-out a ready replica
without a sample and a not-ready one count as idle (they will take load); on a scale-in both count as at
their target (a not-ready replica may be about to serve; the HPA leaves it out, which is less patient).
If the filled-in ratio no longer passes the threshold, nothing changes. No ready replica with a sample
means no data for that metric; no data at all means no change either way.

App-level metrics (what nginx saw for the app): rps and connections are divided over the ready replicas,
p95 latency is the value of every ready replica. When the app-level value is missing, the per-replica
samples stand in for it.

Then, in this order: `minReplicas`/`maxReplicas` bind the recommendation (and bring an app outside them
inside at once, in manual mode too, without waiting for anything); a scale-in goes no lower than the
highest recommendation of the last `stabilizationWindowSeconds` (callers store `recommended` of every
decision); `maxScaleOutStep`/`maxScaleInStep` bound one action; `cooldownSeconds` must have passed since
the last action.

Burst ("panic", as Knative calls it): the same metrics over the last `burst_window_seconds` (6 s). When a
metric there is at `burst_threshold` (200%) of its target or more, the burst window sizes a scale-out and
the cooldown is skipped, so a sudden surge is answered at once instead of when the 60 s average catches
up; the step still binds, but the next evaluation may take the next step. Scale-in stays patient: it also
needs the burst window to agree (every metric under `scaleInThresholdPct`), samples that cover at least
half of `windowSeconds`, and no recent higher recommendation. Once due, it is sized by the burst window,
the load now: the main window's mean still carries a load that ended inside it, and sized from that mean a
fall of the load would come down in two steps.

At zero replicas (minReplicas 0): no change. nginx holds the app's next request and wakes it at once
(workflows/wake.py), before any sample could count that request; the traffic a window still holds from
before the app went to zero is no demand (scaling out on it undid every scale to zero for a window's length).

To zero (minReplicas 0, auto mode): only by idleness, never by the proportional rule (which, with no
traffic, would otherwise take a quiet app down to 0 a step at a time). `quiet` is the app's window over
`idleSeconds`: when its samples cover that span (all but `IDLE_SLACK_SECONDS`), nginx counted no request
and no open connection in any of them, and the last scaling action is at least that old (a woken app
gets its full idleSeconds), the app goes to 0 at once: no step, cooldown or stabilization applies, since
nothing is served. Unknown traffic (no figures from nginx) is never idleness. Otherwise the proportional
rule works with a floor of one replica.

Nothing here reads a clock or does I/O; `now` and the history are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

Direction = Literal["out", "in", "none"]
Mode = Literal["auto", "manual"]

# Defaults of the spec's `scaling` section (../shared/app-spec.md); a normalised spec carries them all anyway.
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 5
DEFAULT_TARGET_RPS_PER_REPLICA = 50.0
DEFAULT_MAX_P95_LATENCY_MS = 250.0
DEFAULT_MAX_CPU_PERCENT = 70.0
DEFAULT_MAX_MEMORY_PERCENT = 75.0
DEFAULT_MAX_CONN_PER_REPLICA = 100.0
DEFAULT_SCALE_OUT_THRESHOLD_PCT = 80.0
DEFAULT_SCALE_IN_THRESHOLD_PCT = 30.0
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_COOLDOWN_SECONDS = 180.0
DEFAULT_MAX_SCALE_OUT_STEP = 2
DEFAULT_MAX_SCALE_IN_STEP = 1
DEFAULT_STABILIZATION_WINDOW_SECONDS = 300.0
DEFAULT_IDLE_SECONDS = 300.0

# The quiet window's samples must cover idleSeconds but this much (a collection every few seconds leaves a
# gap at each end), and at least half of it.
IDLE_SLACK_SECONDS = 5.0

# Not in the spec: the burst window the caller queries besides the main one, and how far past its target a
# metric must be there to count as a surge (2.0: 200%, Knative's panic threshold).
BURST_WINDOW_SECONDS = 6.0  # Knative's panic window is 10% of its 60 s window: three samples at 2 s
BURST_THRESHOLD = 2.0

# A scale-in needs samples that cover at least this fraction of windowSeconds (a collector that was down,
# or a window that just began, says too little about a quiet app).
MIN_SCALE_IN_COVERAGE = 0.5

AT_ZERO = "no replicas: the next request wakes the app (nginx holds it): no change"

# Ratios are quotients of floats: 40/50 must count as exactly 80%.
_EPSILON = 1e-9

METRICS = ("cpu", "memory", "rps", "connections", "p95")


@dataclass(frozen=True)
class ScalingPolicy:
    mode: Mode = "auto"
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    target_rps_per_replica: float = DEFAULT_TARGET_RPS_PER_REPLICA
    max_p95_latency_ms: float = DEFAULT_MAX_P95_LATENCY_MS
    max_cpu_percent: float = DEFAULT_MAX_CPU_PERCENT
    max_memory_percent: float = DEFAULT_MAX_MEMORY_PERCENT
    max_conn_per_replica: float = DEFAULT_MAX_CONN_PER_REPLICA
    scale_out_threshold_pct: float = DEFAULT_SCALE_OUT_THRESHOLD_PCT
    scale_in_threshold_pct: float = DEFAULT_SCALE_IN_THRESHOLD_PCT
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
    max_scale_out_step: int = DEFAULT_MAX_SCALE_OUT_STEP
    max_scale_in_step: int = DEFAULT_MAX_SCALE_IN_STEP
    stabilization_window_seconds: float = DEFAULT_STABILIZATION_WINDOW_SECONDS
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    burst_window_seconds: float = BURST_WINDOW_SECONDS
    burst_threshold: float = BURST_THRESHOLD


@dataclass(frozen=True)
class ReplicaSample:
    """One replica's averages over a window; None where nothing was measured."""

    cpu_percent: float | None = None  # of its CPU limit (of one core without a limit)
    memory_percent: float | None = None  # of its memory limit
    rps: float | None = None
    p95_ms: float | None = None
    active_connections: float | None = None


@dataclass(frozen=True)
class MetricWindow:
    """The metrics of one app over a window: per replica, and what nginx saw for the app as a whole."""

    span_seconds: float  # the time the samples actually cover (0 when there are none)
    replicas: Mapping[str, ReplicaSample] = field(default_factory=dict)  # replica name -> its averages
    rps: float | None = None
    p95_ms: float | None = None
    active_connections: float | None = None


@dataclass(frozen=True)
class ReplicaState:
    name: str
    ready: bool  # in rotation: healthy and serving


@dataclass(frozen=True)
class Recommendation:
    at: datetime
    replicas: int  # a decision's `recommended`


@dataclass(frozen=True)
class ScalingHistory:
    recommendations: Sequence[Recommendation] = ()  # at least the last stabilizationWindowSeconds
    last_scaled_at: datetime | None = None  # the last scaling action (for the cooldown)


NO_HISTORY = ScalingHistory()


@dataclass(frozen=True)
class ScaleDecision:
    current: int
    target: int
    direction: Direction  # of target against current
    ratios: Mapping[str, float | None]  # metric -> value per ready replica / its target; None: no data
    governing: str | None  # the metric that set the target, None when none did
    reason: str
    recommended: int  # what the metrics alone ask for, within min..max: store it for stabilization
    burst: bool = False  # the burst window decided
    idle: bool = False  # to zero: no request and no open connection for idleSeconds


def scales_to_zero(policy: ScalingPolicy) -> bool:
    """Idles to zero replicas and wakes on a request (minReplicas 0 in auto mode): the autoscaler's idle
    decision, nginx's wake map, the `idle` status and the CLI all ask this."""
    return policy.mode == "auto" and policy.min_replicas == 0


def policy_from_spec(scaling: Mapping[str, Any] | None) -> ScalingPolicy:
    """The policy of a normalised spec's `scaling` section; absent keys take the spec's defaults."""
    s: Mapping[str, Any] = scaling or {}
    return ScalingPolicy(
        mode="manual" if s.get("mode") == "manual" else "auto",
        min_replicas=int(s.get("minReplicas", DEFAULT_MIN_REPLICAS)),
        max_replicas=int(s.get("maxReplicas", DEFAULT_MAX_REPLICAS)),
        target_rps_per_replica=float(s.get("targetRPSPerReplica", DEFAULT_TARGET_RPS_PER_REPLICA)),
        max_p95_latency_ms=float(s.get("maxP95LatencyMs", DEFAULT_MAX_P95_LATENCY_MS)),
        max_cpu_percent=float(s.get("maxCPUPercent", DEFAULT_MAX_CPU_PERCENT)),
        max_memory_percent=float(s.get("maxMemoryPercent", DEFAULT_MAX_MEMORY_PERCENT)),
        max_conn_per_replica=float(s.get("maxConnPerReplica", DEFAULT_MAX_CONN_PER_REPLICA)),
        scale_out_threshold_pct=float(s.get("scaleOutThresholdPct", DEFAULT_SCALE_OUT_THRESHOLD_PCT)),
        scale_in_threshold_pct=float(s.get("scaleInThresholdPct", DEFAULT_SCALE_IN_THRESHOLD_PCT)),
        window_seconds=float(s.get("windowSeconds", DEFAULT_WINDOW_SECONDS)),
        cooldown_seconds=float(s.get("cooldownSeconds", DEFAULT_COOLDOWN_SECONDS)),
        max_scale_out_step=int(s.get("maxScaleOutStep", DEFAULT_MAX_SCALE_OUT_STEP)),
        max_scale_in_step=int(s.get("maxScaleInStep", DEFAULT_MAX_SCALE_IN_STEP)),
        stabilization_window_seconds=float(s.get("stabilizationWindowSeconds", DEFAULT_STABILIZATION_WINDOW_SECONDS)),
        idle_seconds=float(s.get("idleSeconds", DEFAULT_IDLE_SECONDS)),
    )


# -- one metric over the replicas that count -------------------------------------------------------------


@dataclass(frozen=True)
class _Load:
    metric: str
    target: float
    per_replica: float  # per ready replica with a sample
    total: float  # summed over the ready replicas with a sample
    sampled: int  # ready replicas with a sample
    missing: int  # ready replicas without one
    not_ready: int  # replicas not in rotation, and slots no replica fills yet

    @property
    def ratio(self) -> float:
        return self.per_replica / self.target

    @property
    def unseen(self) -> int:
        return self.missing + self.not_ready

    @property
    def count(self) -> int:
        return self.sampled + self.unseen

    @property
    def ratio_out(self) -> float:
        """The ratio with every replica not seen counted as idle."""
        return self.total / (self.target * self.count)

    @property
    def ratio_in(self) -> float:
        """The ratio with every replica not seen counted as at its target."""
        return (self.total + self.target * self.unseen) / (self.target * self.count)


_Getter = Callable[[ReplicaSample], float | None]

# metric -> (how a sample holds it, the policy's target, the unit after a value, the unit after the target)
_FORMS: dict[str, tuple[_Getter, Callable[[ScalingPolicy], float], str, str]] = {
    "cpu": (lambda s: s.cpu_percent, lambda p: p.max_cpu_percent, "%", "%"),
    "memory": (lambda s: s.memory_percent, lambda p: p.max_memory_percent, "%", "%"),
    "rps": (lambda s: s.rps, lambda p: p.target_rps_per_replica, "/replica", ""),
    "connections": (lambda s: s.active_connections, lambda p: p.max_conn_per_replica, "/replica", ""),
    "p95": (lambda s: s.p95_ms, lambda p: p.max_p95_latency_ms, "ms", "ms"),
}


def _loads(
    window: MetricWindow, policy: ScalingPolicy, current: int, replicas: Sequence[ReplicaState]
) -> dict[str, _Load | None]:
    ready = [r.name for r in replicas if r.ready]
    not_ready = len(replicas) - len(ready) + max(0, current - len(replicas))
    app_level = {"rps": window.rps, "connections": window.active_connections, "p95": window.p95_ms}
    loads: dict[str, _Load | None] = {}
    for metric in METRICS:
        get, target_of, _, _ = _FORMS[metric]
        target = target_of(policy)
        app_value = app_level.get(metric)
        if app_value is not None:
            if not ready:
                loads[metric] = None
            elif metric == "p95":  # every ready replica answers with the app's latency
                loads[metric] = _Load(metric, target, app_value, app_value * len(ready), len(ready), 0, not_ready)
            else:  # the app's total, divided over the ready replicas
                loads[metric] = _Load(metric, target, app_value / len(ready), app_value, len(ready), 0, not_ready)
            continue
        values = [v for v in (_sample(window, name, get) for name in ready) if v is not None]
        if not values:
            loads[metric] = None
            continue
        total = sum(values)
        loads[metric] = _Load(
            metric, target, total / len(values), total, len(values), len(ready) - len(values), not_ready
        )
    return loads


def _sample(window: MetricWindow, name: str, get: _Getter) -> float | None:
    sample = window.replicas.get(name)
    return None if sample is None else get(sample)


# -- what the metrics ask for ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proposal:
    direction: Direction
    replicas: int
    governing: str | None
    text: str  # "rps 182/replica > 80% of 50 → 3 → 8", or why nothing changes


def _propose(loads: Sequence[_Load], policy: ScalingPolicy, current: int) -> _Proposal:
    if not loads:
        return _Proposal("none", current, None, "no metrics in the window: no change")
    out, inn = _out_fraction(policy), _in_fraction(policy)
    top = max(loads, key=lambda x: x.ratio)
    if top.ratio > out + _EPSILON:
        return _propose_out(loads, policy, current)
    if top.ratio < inn - _EPSILON:
        return _propose_in(loads, policy, current)
    return _Proposal(
        "none",
        current,
        top.metric,
        f"{_value(top)} is {_pct(top.ratio)} of {_target(top)}, between {_num(policy.scale_in_threshold_pct)}% and "
        f"{_num(policy.scale_out_threshold_pct)}%: no change",
    )


def _propose_out(loads: Sequence[_Load], policy: ScalingPolicy, current: int) -> _Proposal:
    out = _out_fraction(policy)
    passing = [x for x in loads if x.ratio > out + _EPSILON]
    still = [x for x in passing if x.ratio_out > out + _EPSILON]
    if not still:
        first = max(passing, key=lambda x: x.ratio)
        return _Proposal(
            "none",
            current,
            first.metric,
            f"{_value(first)} > {_of_target(first, policy.scale_out_threshold_pct)}, but counting "
            f"{_unseen(first)} as idle: {_value(first, first.ratio_out)} ({_pct(first.ratio_out)} of "
            f"{_target(first)}): no change",
        )
    best = max(still, key=lambda x: x.ratio_out)
    desired = _ceil(best.count * best.ratio_out / out)
    note = f" ({_value(best, best.ratio_out)} counting {_unseen(best)} as idle)" if best.unseen else ""
    return _Proposal(
        "out",
        desired,
        best.metric,
        f"{_value(best)} > {_of_target(best, policy.scale_out_threshold_pct)}{note} → {current} → {desired}",
    )


def _propose_in(loads: Sequence[_Load], policy: ScalingPolicy, current: int) -> _Proposal:
    out, inn = _out_fraction(policy), _in_fraction(policy)
    best = max(loads, key=lambda x: x.ratio_in)
    head = f"every metric < {_num(policy.scale_in_threshold_pct)}% of its target"
    if best.ratio_in >= inn - _EPSILON:
        return _Proposal(
            "none",
            current,
            best.metric,
            f"{head}, but counting {_unseen(best)} as at target: {_value(best, best.ratio_in)} "
            f"({_pct(best.ratio_in)} of {_target(best)}): no change",
        )
    desired = _ceil(best.count * best.ratio_in / out)
    note = f"; {_pct(best.ratio_in)} counting {_unseen(best)} as at target" if best.unseen else ""
    return _Proposal(
        "in",
        desired,
        best.metric,
        f"{head} (highest: {_value(best)}, {_pct(best.ratio)} of {_target(best)}{note}) → {current} → {desired}",
    )


def _surge(loads: Sequence[_Load], policy: ScalingPolicy, current: int) -> _Proposal | None:
    """A scale-out sized by the burst window, when a metric there is at the burst threshold or past it."""
    hot = [x for x in loads if x.ratio >= policy.burst_threshold - _EPSILON]
    if not hot:
        return None
    proposal = _propose_out(loads, policy, current)
    if proposal.direction != "out":
        return None
    return replace(proposal, text=f"burst in the last {_num(policy.burst_window_seconds)}s: {proposal.text}")


def _sized_now(proposal: _Proposal, loads: Sequence[_Load], policy: ScalingPolicy, current: int) -> _Proposal:
    """A scale-in sized by the burst window (the load now) where it asks for another count than the main one.

    The main window's mean still carries a load that ended within it: sized from it, one fall of the load
    would come down in two steps (5 → 2, then → 1 once the stabilization window let go of the 2). The main
    window still decides that a scale-in is due, the burst window must agree (`_patience`), and the
    stabilization window still holds the count at the highest recent recommendation; a busier burst window
    sizes higher, never lower than the load now needs."""
    now = _propose_in(loads, policy, current) if loads else None
    if now is None or now.direction != "in" or now.replicas == proposal.replicas:
        return proposal  # no burst figures, or a busy burst window (`_patience` says why), or the same count
    best = next(x for x in loads if x.metric == now.governing)
    text = (
        f"{proposal.text}; sized by the last {_num(policy.burst_window_seconds)}s "
        f"({_value(best)}, {_pct(best.ratio)} of {_target(best)}) → {now.replicas}"
    )
    return replace(proposal, replicas=now.replicas, text=text)


# -- the decision ----------------------------------------------------------------------------------------


def decide_scale(
    window: MetricWindow,
    policy: ScalingPolicy,
    current: int,
    replicas: Sequence[ReplicaState],
    now: datetime,
    history: ScalingHistory = NO_HISTORY,
    burst: MetricWindow | None = None,
    quiet: MetricWindow | None = None,
) -> ScaleDecision:
    """How many replicas the app should run.

    `current` is the app's replica count now (its desired replicas); `replicas` are the replicas that exist
    and are not draining, ready or not (a slot of `current` without one counts as not ready). `window` covers
    the policy's windowSeconds, `burst` (optional) its burst_window_seconds, `quiet` (optional; an app
    with minReplicas 0 needs it to go idle) its idle_seconds."""
    loads = _loads(window, policy, current, replicas)
    ratios = {metric: (load.ratio if load else None) for metric, load in loads.items()}
    present = [load for load in loads.values() if load is not None]
    low, high = policy.min_replicas, policy.max_replicas

    def decided(target: int, reason: str, recommended: int, governing: str | None = None) -> ScaleDecision:
        direction: Direction = "out" if target > current else "in" if target < current else "none"
        return ScaleDecision(current, target, direction, ratios, governing, reason, recommended)

    bounded = min(max(current, low), high)
    if bounded != current:
        bound = f"below minReplicas {low}" if current < low else f"above maxReplicas {high}"
        return decided(bounded, f"{current} {bound} → {bounded}", bounded)
    if policy.mode == "manual":
        return decided(current, f"manual mode: stays at {current} (within {low}..{high})", current)
    if current == 0:  # minReplicas 0 and auto mode (else raised above); replicas left are on their way out
        return decided(0, AT_ZERO, 0)
    if low == 0:  # and current > 0 (returned above)
        idle = _idle(quiet, policy, history, now)
        if idle is not None:
            return replace(decided(0, f"{idle} → {current} → 0", 0), idle=True)
        low = 1  # to zero only by idleness

    proposal = _propose(present, policy, current)
    surge = None
    if burst is not None:
        surge = _surge([x for x in _loads(burst, policy, current, replicas).values() if x], policy, current)
    if surge is not None:  # the larger of the two scale-outs, without waiting for the cooldown
        if proposal.direction == "out" and proposal.replicas > surge.replicas:
            text = f"burst in the last {_num(policy.burst_window_seconds)}s, sized by the main window: {proposal.text}"
            surge = replace(proposal, text=text)
        proposal = surge
    if proposal.direction == "in" and burst is not None:
        recent = [x for x in _loads(burst, policy, current, replicas).values() if x]
        proposal = _sized_now(proposal, recent, policy, current)
    if proposal.direction == "none":
        return decided(current, proposal.text, current, proposal.governing)

    recommended = min(max(proposal.replicas, low), high)
    text = proposal.text
    if recommended != proposal.replicas:
        floor = (
            f"minReplicas {low}"
            if low == policy.min_replicas
            else f"1 (to 0 only after idleSeconds {_num(policy.idle_seconds)})"
        )
        bound = f"capped at maxReplicas {high}" if proposal.replicas > high else f"raised to {floor}"
        text += f", {bound} → {recommended}"

    if proposal.direction == "out":
        target = min(recommended, current + policy.max_scale_out_step)
        if target < recommended:
            text += f", capped at maxScaleOutStep {policy.max_scale_out_step} → {target}"
        held = _cooling(history, policy, now)
        if target > current and held and surge is not None:
            text += " (cooldown skipped)"
        elif target > current and held:
            return decided(current, f"{text}; no change: {held}", recommended, proposal.governing)
    else:
        stabilized = max([recommended, *_recent(history, policy, now)])
        target = max(min(stabilized, current), current - policy.max_scale_in_step)
        if stabilized > recommended:
            text += (
                f", held at {min(stabilized, current)} by the highest recommendation of the last "
                f"{_num(policy.stabilization_window_seconds)}s"
            )
        if target > min(stabilized, current):
            text += f", capped at maxScaleInStep {policy.max_scale_in_step} → {target}"
        held = _patience(window, burst, policy, current, replicas) or _cooling(history, policy, now)
        if target < current and held:
            return decided(current, f"{text}; no change: {held}", recommended, proposal.governing)

    if target == current:
        text += ": no change"
    return replace(decided(target, text, recommended, proposal.governing), burst=surge is not None)


def _idle(quiet: MetricWindow | None, policy: ScalingPolicy, history: ScalingHistory, now: datetime) -> str | None:
    """Why the app is idle (the start of its decision's reason), or None when it is not, or not known to be."""
    seconds = policy.idle_seconds
    if quiet is None or quiet.rps is None or quiet.active_connections is None:
        return None
    if quiet.rps > _EPSILON or quiet.active_connections > _EPSILON:
        return None
    if quiet.span_seconds < max(seconds - IDLE_SLACK_SECONDS, seconds / 2):
        return None
    if history.last_scaled_at is not None and (now - history.last_scaled_at).total_seconds() < seconds:
        return None
    return f"no request and no open connection for {_num(seconds)}s (idleSeconds)"


def _cooling(history: ScalingHistory, policy: ScalingPolicy, now: datetime) -> str | None:
    if history.last_scaled_at is None:
        return None
    elapsed = (now - history.last_scaled_at).total_seconds()
    if elapsed >= policy.cooldown_seconds:
        return None
    return f"in cooldown, last scaled {_num(elapsed)}s ago (cooldownSeconds {_num(policy.cooldown_seconds)})"


def _recent(history: ScalingHistory, policy: ScalingPolicy, now: datetime) -> list[int]:
    since = now - timedelta(seconds=policy.stabilization_window_seconds)
    return [r.replicas for r in history.recommendations if r.at > since]


def _patience(
    window: MetricWindow,
    burst: MetricWindow | None,
    policy: ScalingPolicy,
    current: int,
    replicas: Sequence[ReplicaState],
) -> str | None:
    """Why a scale-in must wait though the window asks for it, or None."""
    needed = policy.window_seconds * MIN_SCALE_IN_COVERAGE
    if window.span_seconds < needed:
        return (
            f"the samples cover {_num(window.span_seconds)}s, less than half of windowSeconds "
            f"{_num(policy.window_seconds)}"
        )
    if burst is None:
        return None
    inn = _in_fraction(policy)
    busy = [x for x in _loads(burst, policy, current, replicas).values() if x and x.ratio >= inn - _EPSILON]
    if not busy:
        return None
    top = max(busy, key=lambda x: x.ratio)
    return f"the last {_num(policy.burst_window_seconds)}s show {_value(top)}, {_pct(top.ratio)} of {_target(top)}"


# -- small helpers ---------------------------------------------------------------------------------------


def _out_fraction(policy: ScalingPolicy) -> float:
    return policy.scale_out_threshold_pct / 100


def _in_fraction(policy: ScalingPolicy) -> float:
    return policy.scale_in_threshold_pct / 100


def _ceil(x: float) -> int:
    """ceil, forgiving the float noise of a quotient (2 × 1.6 / 0.8 is 4, not 5)."""
    return max(0, math.ceil(round(x, 6)))


def _num(x: float) -> str:
    text = f"{round(x, 1):.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _pct(ratio: float) -> str:
    return f"{_num(ratio * 100)}%"


def _value(load: _Load, ratio: float | None = None) -> str:
    value = load.per_replica if ratio is None else ratio * load.target
    return f"{load.metric} {_num(value)}{_FORMS[load.metric][2]}"


def _target(load: _Load) -> str:
    return f"{_num(load.target)}{_FORMS[load.metric][3]}"


def _of_target(load: _Load, pct: float) -> str:
    return f"{_num(pct)}% of {_target(load)}"


def _unseen(load: _Load) -> str:
    parts = []
    if load.missing:
        parts.append(f"{load.missing} {'replica' if load.missing == 1 else 'replicas'} without a sample")
    if load.not_ready:
        parts.append(f"{load.not_ready} not-ready {'replica' if load.not_ready == 1 else 'replicas'}")
    return " and ".join(parts)


# -- what an evaluation does with its decision (the autoscale job applies it) ---------------------------------


@dataclass(frozen=True)
class Outcome:
    decision: ScaleDecision  # as stored (held back by a job in progress: with that in its reason)
    store: bool  # kept in the history (the stabilization window reads it back)
    act: bool  # the desired count changes and a scale job is enqueued


def outcome(decision: ScaleDecision, mode: Mode, *, fast: bool, job: tuple[int, str] | None) -> Outcome:
    """`fast`: the pass right after a metrics sample, which acts on scale-outs only and stores nothing else.
    `job`: the app's queued or running job (id, kind), if any; one of another kind than `scale` (a rollout,
    a stop) holds the change back, since enqueueing would supersede it. A manual app's unchanged decision
    is not stored: nothing reads it back."""
    if fast and decision.direction != "out":
        return Outcome(decision, store=False, act=False)
    if decision.direction == "none":
        return Outcome(decision, store=mode != "manual", act=False)
    if job is not None and job[1] != "scale":
        reason = f"{decision.reason}; waiting for job {job[0]} ({job[1]}) to end"
        held = replace(decision, target=decision.current, direction="none", reason=reason)
        return Outcome(held, store=True, act=False)
    return Outcome(decision, store=True, act=True)
