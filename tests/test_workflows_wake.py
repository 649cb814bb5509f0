"""Scale to zero, the pure part: which apps nginx holds requests for, what a wake asks of an app, the status
shown, the wake-latency histogram, and the routing table's wake map."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.nginx.routes import build_route_table, parse_route_table
from orchestry.workflows.routing import ReplicaView, RoutedApp, routing_table, wake_table
from orchestry.workflows.wake import WakeBounds, shown_status, wake_decision, wake_entry, wake_histogram

ZERO = {"mode": "auto", "minReplicas": 0}


@pytest.mark.parametrize(
    ("scaling", "wake", "expected"),
    [
        (ZERO, None, WakeBounds(100, 30.0)),
        (ZERO, {"maxQueuedRequests": 7, "timeoutSeconds": 2.5}, WakeBounds(7, 2.5)),
        ({"minReplicas": 0}, None, WakeBounds()),  # auto is the default mode
        ({"mode": "manual", "minReplicas": 0}, None, None),  # manual never wakes itself
        ({"mode": "auto", "minReplicas": 1}, {"maxQueuedRequests": 7}, None),
        ({}, None, None),  # minReplicas defaults to 1
    ],
)
def test_wake_entry(scaling: dict[str, Any], wake: dict[str, Any] | None, expected: WakeBounds | None) -> None:
    assert wake_entry(scaling, wake) == expected


@pytest.mark.parametrize(
    ("status", "desired", "scaling", "job", "target", "reason"),
    [
        ("running", 0, ZERO, None, 1, "3 requests held by nginx on n1 while idle → 0 → 1"),
        ("running", 0, ZERO, "scale", 1, "→ 0 → 1"),  # the idle scale-in still draining: superseded
        ("running", 1, ZERO, "scale", None, "already asks for 1 replica(s)"),
        ("running", 2, ZERO, None, None, "already asks for 2"),
        ("running", 0, ZERO, "deploy", None, "has a deploy job in progress: the wake waits for it"),
        ("stopped", 0, ZERO, None, None, "web is stopped: not woken"),
        ("deleting", 0, ZERO, "delete", None, "web is deleting"),
        ("running", 0, {"mode": "manual", "minReplicas": 0}, None, None, "does not scale to zero"),
        ("running", 0, {"minReplicas": 1}, None, None, "does not scale to zero"),
    ],
)
def test_wake_decision(
    status: str, desired: int, scaling: dict[str, Any], job: str | None, target: int | None, reason: str
) -> None:
    d = wake_decision("web", status, desired, scaling, job, "n1", 3)
    assert d.target == target
    assert reason in d.reason


def test_one_held_request_is_singular() -> None:
    assert wake_decision("web", "running", 0, ZERO, None, "n1", 1).reason.startswith("1 request held")


@pytest.mark.parametrize(
    ("status", "desired", "scaling", "shown"),
    [
        ("running", 0, ZERO, "idle"),
        ("running", 1, ZERO, "running"),
        ("running", 0, {"mode": "manual", "minReplicas": 0}, "running"),  # scaled to 0 by hand: no wake
        ("stopped", 0, ZERO, "stopped"),
        ("failed", 0, ZERO, "failed"),
        ("registered", 0, ZERO, "registered"),
    ],
)
def test_shown_status(status: str, desired: int, scaling: dict[str, Any], shown: str) -> None:
    assert shown_status(status, desired, scaling) == shown


def test_wake_histogram() -> None:
    buckets, total = wake_histogram([0.2, 0.8, 0.8, 4.0, 100.0])
    counts = dict(buckets)
    assert (counts["0.25"], counts["0.5"], counts["1.0"], counts["5.0"], counts["60.0"], counts["+Inf"]) == (
        1,
        1,
        3,
        4,
        4,
        5,
    )
    assert buckets[-1][0] == "+Inf" and total == pytest.approx(105.8)
    assert wake_histogram([]) == ([*((b, 0) for b, _ in buckets[:-1]), ("+Inf", 0)], 0.0)


def _app(name: str, status: str = "running", wake: WakeBounds | None = None, kind: str = "http") -> RoutedApp:
    return RoutedApp(name, kind, status, True, (ReplicaView(None, False, "unknown", False),), wake)


def test_wake_table_lists_routed_apps_that_may_idle() -> None:
    apps = [
        _app("web", wake=WakeBounds(5, 3)),
        _app("api"),
        _app("off", status="stopped", wake=WakeBounds()),  # not routed: not held either
        _app("jobs", kind="worker", wake=WakeBounds()),
    ]
    assert routing_table(apps) == {"api": [], "web": []}
    assert wake_table(apps) == {"web": {"max": 5, "timeout": 3}}


def test_the_route_table_carries_wake_and_parses_back() -> None:
    table = build_route_table(4, {"web": [], "api": ["127.0.0.1:80"]}, {"web": {"max": 5, "timeout": 3}})
    assert dict(table.wake) == {"web": (5, 3.0)}
    assert parse_route_table(table.to_json()) == table
    assert '"wake"' not in build_route_table(4, {"web": []}).to_json()  # the text of a table without wake is as before


@pytest.mark.parametrize(
    ("wake", "match"),
    [
        ({"nope": {"max": 1, "timeout": 1}}, "wake of nope: not an app of the table"),
        ({"web": {"max": 0, "timeout": 1}}, "wake.max of web"),
        ({"web": {"max": True, "timeout": 1}}, "wake.max of web"),
        ({"web": {"max": 1, "timeout": 0}}, "wake.timeout of web"),
        ({"web": {"max": 1, "timeout": "5"}}, "wake.timeout of web"),
        ({"web": [1, 2]}, "wake of web: expected an object"),
    ],
)
def test_the_route_table_refuses_bad_wake(wake: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_route_table(1, {"web": []}, wake)
