"""The nginx control endpoint is the controller's alone (issue 11, "Access"): writes need the node's secret,
generations stay safe integers, the controller never adopts a generation it did not write, and a bad table
is repaired by the next push. Real nginx, real database."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_nginx_live import Backends, client, control, make_settings

from orchestry.controller.mirror import RouteMirror
from orchestry.controller.routing import RouteSync
from orchestry.models.routing import routing_state, stored_generation
from orchestry.nginx.manager import NginxError, NginxManager, ensure_secret
from orchestry.nginx.routes import build_route_table
from orchestry.workflows.generations import MAX_GENERATION, next_generation, stale_push

# --- the decisions, as tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "changed", "expected"),
    [
        (0, False, (1, False)),  # the first table
        (0, True, (1, False)),
        (5, False, (5, False)),
        (5, True, (6, False)),
        (MAX_GENERATION - 1, True, (MAX_GENERATION, False)),
        (MAX_GENERATION, False, (1, True)),  # no room for the next change: start again
        (MAX_GENERATION, True, (1, True)),
        (2**53, True, (1, True)),  # stored before the bound was enforced
        (2**63 - 1, False, (1, True)),
        (-3, False, (1, True)),
    ],
)
def test_next_generation(stored: int, changed: bool, expected: tuple[int, bool]) -> None:
    assert next_generation(stored, changed) == expected


@pytest.mark.parametrize(
    ("served", "stored_now", "verdict"),
    [
        (7, 7, "newer"),  # the other writer of this node pushed the database's newest table
        (6, 7, "newer"),
        (8, 7, "replace"),  # no table of this database has that generation
        (2**53, 7, "replace"),
        (None, 7, "replace"),  # nginx answered no usable generation
        (-1, 7, "replace"),
    ],
)
def test_stale_push(served: int | None, stored_now: int, verdict: str) -> None:
    assert stale_push(served, stored_now) == verdict


def test_the_secret_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "nginx" / "control.secret"
    secret = ensure_secret(path)
    assert len(secret) == 64 and int(secret, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(path) == secret  # kept across restarts
    path.chmod(0o644)
    assert ensure_secret(path) == secret and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")  # a crash while writing it
    fresh = ensure_secret(path)
    assert len(fresh) == 64 and fresh != secret


# --- real nginx ------------------------------------------------------------------------------------------


def test_a_write_without_the_secret_changes_nothing(nginx: NginxManager, backends: Backends) -> None:
    """Repro: any local process could `PUT /_orchestry/routes` and send an app's traffic anywhere."""
    table = build_route_table(5, {"web": [backends["real"].address]})
    nginx.push_routes(table)
    assert stat.S_IMODE(nginx.settings.control_secret_path.stat().st_mode) == 0o600
    hijack = json.dumps({"generation": 6, "apps": {"web": [backends["evil"].address]}})
    with control(nginx, secret=False) as c:
        refused = c.put("/_orchestry/routes", content=hijack)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        wrong = c.put("/_orchestry/routes", content=hijack, headers={"X-Orchestry-Control-Secret": "0" * 64})
        assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
        short = c.put("/_orchestry/routes", content=hijack, headers={"X-Orchestry-Control-Secret": "x"})
        assert short.status_code == 403
        assert c.put("/_orchestry/confirmed", content='{"generation": 5}').status_code == 401
        assert c.get("/_orchestry/routes").json() == json.loads(table.to_json())  # reads stay open
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "real"
    assert nginx.push_routes(build_route_table(6, {"web": [backends["real"].address]})) == 6  # the controller can


def test_a_replaced_secret_file_is_read_again_by_one_reload(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": [backends["a"].address]}))
    path = nginx.settings.control_secret_path
    path.unlink()  # e.g. a restored data directory: nginx still holds the old secret
    fresh = NginxManager(nginx.settings)  # a restarted controller makes a new one
    try:
        assert fresh.push_routes(build_route_table(2, {"web": [backends["b"].address]})) == 2
    finally:
        fresh.close()
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "b"


@pytest.mark.parametrize(
    "generation",
    ["9007199254740992", "9007199254740993", "18014398509481984", "1e300", "9.007199254740992e15"],
)
def test_generations_beyond_2_53_are_refused(nginx: NginxManager, generation: str) -> None:
    nginx.push_routes(build_route_table(1, {"web": ["127.0.0.1:9"]}))
    with control(nginx) as c:
        body = f'{{"generation": {generation}, "apps": {{}}}}'
        resp = c.put("/_orchestry/routes", content=body)
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_routes", resp.text
        confirm = c.put("/_orchestry/confirmed", content=f'{{"generation": {generation}}}')
        assert confirm.status_code == 400
        assert c.get("/_orchestry/generation").json() == {"generation": 1}
        ok = c.put("/_orchestry/routes", content='{"generation": 9007199254740991, "apps": {}}')
        assert ok.status_code == 200 and ok.json() == {"generation": 9007199254740991}


def poison(nginx: NginxManager, sessions: sessionmaker[Session], generation: int, evil: str) -> None:
    """What the hole left behind: a routes file and a database at `generation` (written before the fix by a
    hijacking PUT the controller then adopted)."""
    nginx.settings.routes_path.parent.mkdir(parents=True, exist_ok=True)
    nginx.settings.routes_path.write_text(json.dumps({"generation": generation, "apps": {"web": [evil]}}))
    with sessions.begin() as session:
        state = routing_state(session)
        state.generation, state.served_generation, state.routes = generation, generation, {"web": [evil]}


def test_a_generation_above_2_53_no_longer_breaks_every_push_across_restarts(
    tmp_path: Path, sessions: sessionmaker[Session], backends: Backends
) -> None:
    """Repro: a generation above 2^53 was stored by the controller and broke every later push, for good,
    across restarts (only a database edit repaired it)."""
    settings = make_settings(tmp_path / "nginx")
    manager = NginxManager(settings)
    poison(manager, sessions, 2**53, backends["evil"].address)
    try:
        manager.start()  # a restart: nginx ignores the routes file (not a safe generation)
        sync = RouteSync(sessions, manager, "n1")
        sync.sync()  # the leader's next pass repairs it
        assert manager.served_generation() == 1
        with sessions() as session:
            assert stored_generation(session) == 1
        assert json.loads(settings.routes_path.read_text()) == {"generation": 1, "apps": {}}
        with client(manager) as c:
            assert c.get("/web/").status_code == 404  # the hijacked route is gone
        # The mirror (every node) serves the stored table too, and later pushes go on from there.
        assert RouteMirror(sessions, manager, "n1").run_once() == 1
        with sessions.begin() as session:
            state = routing_state(session)
            state.generation, state.routes = 2, {"web": [backends["real"].address]}
        assert RouteMirror(sessions, manager, "n1").run_once() == 2
        with client(manager) as c:
            assert c.get("/web/").json()["name"] == "real"
    finally:
        manager.stop()
        manager.close()


def test_a_table_this_database_did_not_write_is_replaced_not_adopted(
    nginx: NginxManager, sessions: sessionmaker[Session], backends: Backends
) -> None:
    """nginx holds a valid but foreign generation (an older database beside this data directory): the
    database's table replaces it and the database keeps its own generation."""
    with control(nginx) as c:
        foreign = {"generation": 1000, "apps": {"web": [backends["old"].address]}}
        assert c.put("/_orchestry/routes", content=json.dumps(foreign)).status_code == 200
    nginx.settings.routes_path.parent.mkdir(parents=True, exist_ok=True)
    nginx.settings.routes_path.write_text(json.dumps(foreign))
    sync = RouteSync(sessions, nginx, "n1")
    sync.sync()
    with sessions() as session:
        assert stored_generation(session) == 1  # not 1000, not 1001
    assert nginx.served_generation() == 1
    assert nginx.routes_file_generation() == 1
    # On another node (its mirror), the same repair.
    with control(nginx) as c:
        assert c.put("/_orchestry/routes", content=json.dumps(foreign)).status_code == 200
    assert RouteMirror(sessions, nginx, "n2").run_once() == 1
    assert nginx.served_routes() == {"generation": 1, "apps": {}}


def test_the_mirror_keeps_a_newer_table_of_this_database(
    nginx: NginxManager, sessions: sessionmaker[Session], backends: Backends
) -> None:
    """The leader pushed generation 3 to this nginx after the mirror read 2: not a foreign table."""
    with sessions.begin() as session:
        state = routing_state(session)
        state.generation, state.routes = 3, {"web": [backends["new"].address]}
    nginx.push_routes(build_route_table(3, {"web": [backends["new"].address]}))
    mirror = RouteMirror(sessions, nginx, "n2")
    assert mirror._push(2, {"web": [backends["old"].address]}) == 3
    assert nginx.served_routes()["apps"] == {"web": [backends["new"].address]}


def test_an_external_style_secret_path_is_honoured(tmp_path: Path, backends: Backends) -> None:
    secret_file = tmp_path / "elsewhere" / "ctl.secret"
    manager = NginxManager(make_settings(tmp_path / "nginx", control_secret_file=secret_file))
    try:
        manager.start()
        assert secret_file.exists() and not (tmp_path / "nginx" / "control.secret").exists()
        assert manager.push_routes(build_route_table(1, {"web": [backends["a"].address]})) == 1
        assert oct(os.stat(secret_file).st_mode & 0o777) == "0o600"
        resp = httpx.put(
            f"http://127.0.0.1:{manager.settings.control_port}/_orchestry/routes",
            content='{"generation": 2, "apps": {}}',
            timeout=5,
        )
        assert resp.status_code == 401
    finally:
        manager.stop()
        manager.close()


def test_the_rendered_control_server_checks_writes(tmp_path: Path) -> None:
    from orchestry.nginx.render import render_config, render_include

    settings = make_settings(tmp_path / "nginx")
    for text in (render_config(settings), render_include(settings)):
        assert f'control_secret_file = "{tmp_path}/nginx/control.secret"' in text
        control_server = text[text.index("# Control server") :]
        assert 'require("orchestry_router").control_access()' in control_server
    with pytest.raises(ValueError, match="control_secret_file"):
        make_settings(tmp_path / "nginx", control_secret_file=Path('/tmp/x"; os.execute("id") --'))


class Impostor(http.server.BaseHTTPRequestHandler):
    """What another local process could answer on a control port it took while nginx was down."""

    def _answer(self) -> None:
        body = b'{"generation": 99, "apps": {}, "127.0.0.1:9": 0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Orchestry-Control-Proof", "0" * 40)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_the_controller_believes_only_its_own_nginx(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    manager = NginxManager(make_settings(tmp_path / "nginx", control_port=server.server_address[1]))
    try:
        assert manager.served_generation() is None  # not 99
        assert manager.in_flight("127.0.0.1:9") is None  # not 0: a drain would stop a busy replica
        with pytest.raises(NginxError, match="without proof"):
            manager.push_routes(build_route_table(1, {}))
        with pytest.raises(NginxError):
            manager.traffic_counters()
    finally:
        server.shutdown()
        server.server_close()
        manager.close()


def test_nginx_proves_the_secret_on_the_control_port_only(nginx: NginxManager) -> None:
    nonce = "ab" * 16
    expected = hmac.new(nginx.control_secret().encode(), nonce.encode(), hashlib.sha1).hexdigest()
    headers = {"X-Orchestry-Control-Nonce": nonce}
    with control(nginx, secret=False) as c:
        assert c.get("/_orchestry/generation", headers=headers).headers["X-Orchestry-Control-Proof"] == expected
        refused = c.put("/_orchestry/routes", content="{}", headers=headers)
        assert refused.status_code == 401 and refused.headers["X-Orchestry-Control-Proof"] == expected
    with client(nginx) as c:  # the public port is no oracle
        assert "X-Orchestry-Control-Proof" not in c.get("/web/", headers=headers).headers


def test_concurrent_first_uses_agree_on_one_secret(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "nginx" / "control.secret"
    with ThreadPoolExecutor(8) as pool:
        made = set(pool.map(lambda _: ensure_secret(path), range(64)))
    assert made == {path.read_text().strip()}
    assert [p.name for p in path.parent.iterdir()] == ["control.secret"]  # no temp file left
