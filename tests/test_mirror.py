"""The route mirror against a real database and a real nginx: it serves the stored table, and reports what
it serves (only when that changed, plus its traffic counters every second)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_nginx_live import Backends, make_settings

from orchestry.controller.mirror import RouteMirror
from orchestry.models.cluster import ControllerNode, heartbeat, route_reports, traffic_reports
from orchestry.models.routing import routing_state
from orchestry.nginx.manager import SECRET_HEADER, NginxManager

pytestmark = pytest.mark.usefixtures("nginx_required")  # fails, never skips, when nginx is missing


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


def test_the_leaders_mirror_reports_no_traffic_counters(sessions: sessionmaker[Session], nginx: NginxManager) -> None:
    """The leader's metrics read its own nginx's counters directly and only the other nodes' from their reports:
    the leader reading and writing its own every second was work nobody used (issue 10). Once it no longer
    leads, it reports them again, as every follower does."""
    backends = Backends()
    leading = [True]
    try:
        with sessions.begin() as session:
            heartbeat(session, "n1", "http://127.0.0.1:1", "test")
        mirror = RouteMirror(sessions, nginx, "n1", leading=lambda: leading[0])
        store(sessions, 2, {"web": [backends["a"].address]})
        assert mirror.run_once() == 2
        with sessions() as session:
            assert route_reports(session, 3.0)[0].generation == 2  # what it serves is still reported
            assert "n1" not in traffic_reports(session, 3.0)
        leading[0] = False
        assert mirror.run_once() == 2
        with sessions() as session:
            assert "n1" in traffic_reports(session, 3.0)
    finally:
        for backend in backends.values():
            backend.close()


def ready(nginx: NginxManager) -> httpx.Response:
    port = nginx.settings.listen_port
    return httpx.get(f"http://127.0.0.1:{port}/_orchestry/ready", headers={"Host": "web.localhost"}, timeout=5)


def test_ready_while_the_controller_confirms_the_table_and_stale_once_it_stops(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """What a load balancer in front of several nodes checks: a node whose controller died keeps routing its
    last table, but stops calling itself ready after `stale_after` seconds without a confirmation."""
    # 2 s: a pass that confirms also writes its report, which took over 1 s on a loaded machine
    nginx = NginxManager(make_settings(tmp_path / "nginx", stale_after=2.0))
    backends = Backends()
    try:
        mirror = RouteMirror(sessions, nginx, "n2")
        nginx.start()
        no_table = ready(nginx)
        assert no_table.status_code == 503 and no_table.json()["detail"] == "no routing table yet"

        store(sessions, 3, {"web": [backends["a"].address]})
        assert mirror.run_once() == 3
        body = ready(nginx).json()  # on any host: the path is reserved, never routed to an app
        assert body["ready"] is True and body["generation"] == 3 and body["confirmed_seconds_ago"] < 1

        time.sleep(2.3)  # the controller is gone: nobody confirms
        stale = ready(nginx)
        assert stale.status_code == 503 and stale.json()["error"] == "stale_routes"
        assert "last confirmed by this node's controller" in stale.json()["detail"]
        routed = httpx.get(f"http://127.0.0.1:{nginx.settings.listen_port}/web/", timeout=5)
        assert routed.status_code == 200  # still routing its last table

        assert mirror.run_once() == 3 and ready(nginx).status_code == 200  # back: confirmed again
        assert nginx.confirm_routes(2) is False  # only the generation nginx serves can be confirmed

        nginx.stop()
        nginx.start()  # loads generation 3 from the routes file, unconfirmed
        restarted = ready(nginx)
        assert restarted.status_code == 503 and restarted.json()["generation"] == 3
        assert "not confirmed" in restarted.json()["detail"]
    finally:
        nginx.stop()
        nginx.close()
        for backend in backends.values():
            backend.close()


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [
        ("PUT", "", 400),
        ("PUT", "[]", 400),
        ("PUT", '{"generation": -1}', 400),
        ("PUT", '{"generation": 1.5}', 400),
        ("PUT", '{"generation": "3"}', 400),
        ("PUT", '{"generation": 1e300}', 400),
        ("GET", "", 405),
        ("PUT", '{"generation": 7}', 409),  # nginx serves no table
    ],
)
def test_confirmations_are_checked(nginx: NginxManager, method: str, body: str, status: int) -> None:
    nginx.start()
    port = nginx.settings.control_port
    headers = {SECRET_HEADER: nginx.control_secret()}
    resp = httpx.request(
        method, f"http://127.0.0.1:{port}/_orchestry/confirmed", content=body, headers=headers, timeout=5
    )
    assert resp.status_code == status and "error" in resp.json()


def test_the_leader_mirrors_less_often_than_a_follower(sessions: sessionmaker[Session]) -> None:
    """A follower polls the stored table 4 times a second; the leader pushed it itself, so its mirror passes
    (restart, confirmation, traffic, the edge) come twice a second: an idle leader's largest cost but two."""
    from orchestry.controller import mirror as module

    leading = [False]
    mirror = RouteMirror(sessions, object(), "n1", leading=lambda: leading[0])  # type: ignore[arg-type]
    assert mirror.period() == module.PERIOD_SECONDS == 0.25
    leading[0] = True
    assert mirror.period() == module.LEADER_PERIOD_SECONDS == 0.5
    assert module.LEADER_PERIOD_SECONDS <= 0.5  # a certificate issued is served within a second (issue 13)
