"""One writer per node's nginx: the leader's RouteSync and the node's RouteMirror push through the node's one
NginxWriter, so a change of routing is pushed to that nginx once, even when the mirror reads the stored
table between the leader's commit and its push (which used to make both push it)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fakes import RecordingNginx
from sqlalchemy.orm import Session, sessionmaker

from orchestry.controller.mirror import RouteMirror
from orchestry.controller.routing import NginxWriter, RouteSync
from orchestry.models.routing import routing_state


def wired(sessions: sessionmaker[Session], nginx: RecordingNginx, shared: bool) -> tuple[RouteSync, RouteMirror]:
    """As node.py wires them (`shared`), or each with a writer of its own (the wiring before)."""
    manager: Any = nginx  # a RecordingNginx answers what RouteSync and RouteMirror call
    writer = NginxWriter(manager) if shared else None
    return RouteSync(sessions, manager, "n1", writer), RouteMirror(sessions, manager, "n1", writer=writer)


def test_a_change_is_pushed_once(sessions: sessionmaker[Session]) -> None:
    nginx = RecordingNginx()
    sync, mirror = wired(sessions, nginx, shared=True)
    sync.sync()  # the first table: generation 1
    assert mirror.run_once() == 1
    with sessions.begin() as session:  # a change of routing (what a new healthy replica does)
        state = routing_state(session)
        state.generation, state.routes = 2, {"web": ["127.0.0.1:9001"]}
    assert mirror.run_once() == 2
    sync.sync()  # the leader computes the same table from its tables (none routed here): a new generation
    assert mirror.run_once() == 3
    assert nginx.pushes == [1, 2, 3]


@pytest.mark.parametrize(("shared", "pushes"), [(True, 1), (False, 2)])  # False: the positive control
def test_the_mirror_between_the_leaders_commit_and_push_does_not_push_again(
    sessions: sessionmaker[Session], shared: bool, pushes: int
) -> None:
    nginx = RecordingNginx()
    sync, mirror = wired(sessions, nginx, shared)
    nginx.hold.set()
    leader = threading.Thread(target=sync.sync)
    leader.start()  # stores generation 1, then its push is held
    assert nginx.pushing.wait(10)
    nginx.read.clear()
    follower = threading.Thread(target=mirror.run_once)
    follower.start()
    assert nginx.read.wait(10)  # the mirror read what nginx serves (nothing yet) and the stored generation 1
    nginx.release.set()
    leader.join(10)
    follower.join(10)
    assert not leader.is_alive() and not follower.is_alive()
    assert nginx.served == 1
    assert nginx.pushes == [1] * pushes
