"""Lost hosts of a swarm (pure), as a table of cases."""

from __future__ import annotations

import pytest

from orchestry.workflows.hosts import (
    ACTIVATE_AFTER_SECONDS,
    LOST,
    REQUESTED,
    HostHealth,
    HostView,
    activate_step,
    drain_step,
    leaving,
    lost_hosts,
    reachable_runs,
    to_activate,
)

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def ok(host: str) -> HostHealth:
    return HostHealth(host, "healthy")


def cut(host: str) -> HostHealth:
    """Unhealthy, its last probe unable to reach the host (no route)."""
    return HostHealth(host, "unhealthy", unreachable=True)


def slow(host: str) -> HostHealth:
    """Unhealthy by timeouts or bad answers: an overloaded host or a broken replica, not a lost host."""
    return HostHealth(host, "unhealthy")


@pytest.mark.parametrize(
    ("replicas", "lost"),
    [
        ([], set()),
        ([ok(A), cut(B), cut(B)], {B}),
        ([ok(A), cut(B), cut(C)], {B, C}),
        # one replica of the host still answers: not lost
        ([ok(A), cut(B), ok(B)], set()),
        # timeouts and bad answers are not a lost host (an overloaded one gives them too)
        ([ok(A), slow(B), slow(B)], set()),
        ([ok(A), cut(B), slow(B)], set()),
        # an unreachable probe not yet past the failure threshold: not lost yet
        ([ok(A), HostHealth(B, "healthy", unreachable=True)], set()),
        ([ok(A), HostHealth(B, "unknown", unreachable=True)], set()),
        # nothing answers anywhere: nothing to compare with, nothing drained
        ([cut(A), cut(B)], set()),
        # the docker runtime's one host is never lost
        ([HostHealth("127.0.0.1", "unhealthy", unreachable=True), ok(B)], set()),
    ],
)
def test_lost_hosts(replicas: list[HostHealth], lost: set[str]) -> None:
    assert lost_hosts(replicas) == lost


def host(availability: str = "active", drained_for: str | None = None, state: str = "ready") -> HostView:
    return HostView("h3", C, state, availability, drained_for)


@pytest.mark.parametrize(
    ("view", "moving"),
    [
        (host(), False),
        (host("pause"), False),  # someone paused it: nothing new there, what runs stays
        (host("pause", REQUESTED), True),  # Orchestry drains it: its replicas move, health-gated
        (host("drain"), True),
        (host("drain", LOST), True),
    ],
)
def test_replicas_leave_a_host_being_drained(view: HostView, moving: bool) -> None:
    assert leaving(view) is moving


NOW = 1000.0


@pytest.mark.parametrize(
    ("view", "since", "activated"),
    [
        (host("drain", LOST), NOW - ACTIVATE_AFTER_SECONDS, True),
        (host("drain", LOST), NOW - ACTIVATE_AFTER_SECONDS / 2, False),  # reached, not long enough
        (host("drain", LOST), None, False),  # not reached
        (host("drain", LOST, state="down"), NOW - 60, False),  # Swarm does not see it yet
        (host("drain", REQUESTED), NOW - 60, False),  # an operator drained it: stays drained
        (host("drain"), NOW - 60, False),  # drained in Swarm by someone else
        (host(), NOW - 60, False),
    ],
)
def test_a_lost_host_is_activated_once_back(view: HostView, since: float | None, activated: bool) -> None:
    reachable = {} if since is None else {C: since}
    assert to_activate([view], reachable, NOW) == (["h3"] if activated else [])


def test_reachable_runs_keep_their_start_and_forget_a_failure() -> None:
    runs = reachable_runs({}, {A: True, B: False}, 1.0)
    assert runs == {A: 1.0}
    runs = reachable_runs(runs, {A: True, B: True}, 2.0)
    assert runs == {A: 1.0, B: 2.0}
    assert reachable_runs(runs, {A: False, B: True}, 3.0) == {B: 2.0}
    assert reachable_runs(runs, {}, 3.0) == {}


@pytest.mark.parametrize(
    ("view", "there", "step"),
    [
        (host(), 2, "pause"),
        (host(), 0, "pause"),
        (host("pause"), 2, "pause"),  # paused by someone: Orchestry labels it as its drain
        (host("pause", REQUESTED), 2, "move"),
        (host("pause", REQUESTED), 0, "drain"),
        (host("drain", REQUESTED), 0, "done"),
        (host("drain", LOST), 1, "move"),  # a lost host's stragglers: the converge jobs replace them
        (host("drain", LOST), 0, "drain"),  # relabelled: the operator's now, not activated when it returns
        (host("drain"), 0, "drain"),  # drained by someone else: labelled as requested
    ],
)
def test_drain_steps(view: HostView, there: int, step: str) -> None:
    assert drain_step(view, there) == step


@pytest.mark.parametrize(
    ("view", "stale", "step"),
    [
        (host("drain", LOST), 2, "wait"),
        (host("drain", LOST), 0, "activate"),
        (host("drain", REQUESTED), 0, "activate"),
        (host("pause"), 0, "activate"),
        (host(), 0, "done"),
        (host(), 3, "done"),  # active already: its tasks are Swarm's business
    ],
)
def test_activate_steps(view: HostView, stale: int, step: str) -> None:
    assert activate_step(view, stale) == step
