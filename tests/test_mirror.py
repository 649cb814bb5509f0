"""The route mirror against a real database and a real nginx: it serves the stored table, and reports what
it serves (only when that changed, plus its traffic counters every second)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_nginx_live import NGINX_MISSING, Backends, make_settings

from orchestry.controller.mirror import RouteMirror
from orchestry.models.cluster import ControllerNode, heartbeat, route_reports, traffic_reports
from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.models.routing import routing_state
from orchestry.nginx.manager import NginxManager

pytestmark = pytest.mark.skipif(bool(NGINX_MISSING), reason=f"needs Debian's nginx with Lua (missing {NGINX_MISSING})")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxManager]:
    manager = NginxManager(make_settings(tmp_path / "nginx"))
    yield manager
    manager.stop()
    manager.close()


def store(sessions: sessionmaker[Session], generation: int, routes: dict[str, list[str]]) -> None:
    with sessions.begin() as session:
        state = routing_state(session)
        state.generation, state.routes = generation, routes


def reported_at(sessions: sessionmaker[Session]) -> object:
    with sessions() as session:
        return session.scalar(select(ControllerNode.routes_reported_at).where(ControllerNode.node_id == "n2"))


def test_the_mirror_serves_the_stored_table_and_reports_it(
    sessions: sessionmaker[Session], nginx: NginxManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestry.controller.mirror.TRAFFIC_SECONDS", 3600.0)  # counters: the first pass only
    backends = Backends()
    try:
        with sessions.begin() as session:
            heartbeat(session, "n2", "http://127.0.0.1:1", "test")
        mirror = RouteMirror(sessions, nginx, "n2")
        store(sessions, 5, {"web": [backends["a"].address]})
        assert mirror.run_once() == 5  # started nginx with its configuration, pushed generation 5
        assert nginx.served_routes()["apps"] == {"web": [backends["a"].address]}
        with sessions() as session:
            (report,) = route_reports(session, 3.0)
            assert (report.node, report.generation, report.inflight) == ("n2", 5, {})
            assert route_reports(session, 3.0, exclude="n2") == []
            assert "n2" in traffic_reports(session, 3.0)
        first = reported_at(sessions)
        assert mirror.run_once() == 5 and reported_at(sessions) == first  # nothing new: not written again

        store(sessions, 6, {"web": [backends["b"].address]})
        assert mirror.run_once() == 6
        assert nginx.served_routes()["apps"] == {"web": [backends["b"].address]}
        with sessions() as session:
            assert route_reports(session, 3.0)[0].generation == 6
    finally:
        for backend in backends.values():
            backend.close()
