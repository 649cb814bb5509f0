"""A real nginx (Debian's binary and Lua module) in a temp prefix, in front of tiny HTTP backends in threads.

Each test gets its own nginx on free ports and stops it afterwards. Backends answer with their name, the
path and the headers they received, so a test sees where nginx sent a request and what it forwarded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestry.nginx.manager import (
    SECRET_HEADER,
    ConfigRefused,
    NginxManager,
    ReloadFailed,
    StaleGeneration,
    worker_identity,
)
from orchestry.nginx.render import NginxSettings, render_config
from orchestry.nginx.routes import build_route_table
from orchestry.nginx.traffic import TrafficMeter
from orchestry.testapp.ports import free_port

pytestmark = pytest.mark.usefixtures("nginx_required")  # fails, never skips, when nginx is missing


# --- backends --------------------------------------------------------------------------------------------


class Backend:
    """An HTTP/1.1 server in a thread that answers JSON: its name, the method, path and headers it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: list[tuple[str, str]] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream connections expect
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if "sleep=" in self.path:  # a slow request, to watch it in flight
                    time.sleep(float(self.path.rpartition("sleep=")[2]))
                backend.hits.append((self.command, self.path))
                body = json.dumps(
                    {"name": backend.name, "method": self.command, "path": self.path, "headers": dict(self.headers)}
                ).encode()
                if "big=" in self.path:  # a response larger than nginx's proxy buffers
                    body = b"y" * int(self.path.rpartition("big=")[2])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Resetter:
    """Accepts a connection, reads the request head, then resets it: a replica that dies mid-request."""

    def __init__(self) -> None:
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.requests += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self.sock.close()


def refused_address() -> str:
    """An address nobody listens on (the port was free a moment ago)."""
    return f"127.0.0.1:{free_port()}"


class Backends(dict[str, Backend]):
    """Backends by name, each started on first use."""

    def __missing__(self, name: str) -> Backend:
        backend = self[name] = Backend(name)
        return backend


# --- nginx -----------------------------------------------------------------------------------------------


def make_settings(prefix: Path, **changes: Any) -> NginxSettings:
    fields: dict[str, Any] = {
        "prefix": prefix,
        "listen_port": free_port(),
        "control_port": free_port(),
        "worker_processes": 2,
        # As root, workers run as nobody: they cannot enter pytest's 0700 temp directory, and need not.
        "user": worker_identity()[0],
        "group": worker_identity()[1],
        "error_log_level": "notice",  # so that a reload ("reconfiguring") would show in the error log
    }
    fields.update(changes)
    return NginxSettings(**fields)


def client(manager: NginxManager) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{manager.settings.listen_port}", timeout=5, trust_env=False)


def control(manager: NginxManager, *, secret: bool = True) -> httpx.Client:
    """The control endpoint, as the controller calls it (with the node's secret) or as any local process."""
    headers = {SECRET_HEADER: manager.control_secret()} if secret else {}
    return httpx.Client(
        base_url=f"http://127.0.0.1:{manager.settings.control_port}", headers=headers, timeout=5, trust_env=False
    )


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def raw_request(manager: NginxManager, request: bytes) -> bytes:
    """Bytes on the wire, for what an HTTP client would encode away."""
    with socket.create_connection(("127.0.0.1", manager.settings.listen_port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def load_number(manager: NginxManager) -> int:
    with control(manager) as c:
        return int(c.get("/_orchestry/status").json()["load"])


def access_log(manager: NginxManager, count: int) -> list[dict[str, Any]]:
    """The access log's lines, once there are `count` (nginx writes a line just after the response)."""
    path = Path(str(manager.settings.access_log))
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.01)


# --- routing ---------------------------------------------------------------------------------------------


def test_nothing_routed_before_the_first_push(nginx: NginxManager) -> None:
    assert nginx.served_generation() is None
    with client(nginx) as c:
        response = c.get("/web/")
    assert response.status_code == 503
    assert response.json() == {"error": "no_routes", "app": "web"}


def test_two_apps_by_host_and_by_path_round_robin(nginx: NginxManager, backends: Backends) -> None:
    a1, a2, b1 = backends["a1"], backends["a2"], backends["b1"]
    assert nginx.push_routes(build_route_table(1, {"alpha": [a1.address, a2.address], "beta": [b1.address]})) == 1
    with client(nginx) as c:
        by_host = [c.get("/x?q=1", headers={"Host": "alpha.localhost"}).json() for _ in range(4)]
        by_path = [c.get("/alpha/deep/path?q=1").json() for _ in range(4)]
        beta = c.get("/beta/", headers={"Host": "localhost:8080"}).json()
        beta_by_host = c.post("/p", headers={"Host": "BETA.localhost"}, content=b"hello").json()
        bare = c.get("/beta?z=1")
    # Round-robin: one keep-alive connection stays on one worker, whose counter alternates.
    assert [r["name"] for r in by_host] in (["a1", "a2"] * 2, ["a2", "a1"] * 2)
    assert [r["name"] for r in by_path] in (["a1", "a2"] * 2, ["a2", "a1"] * 2)
    assert {r["path"] for r in by_host} == {"/x?q=1"}
    assert {r["path"] for r in by_path} == {"/deep/path?q=1"}  # prefix stripped, query kept
    headers = by_path[0]["headers"]
    assert headers["X-Orchestry-App"] == "alpha"
    assert headers["X-Forwarded-Prefix"] == "/alpha"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert "X-Forwarded-Prefix" not in by_host[0]["headers"]
    assert by_host[0]["headers"]["Host"] == "alpha.localhost"
    assert (beta["name"], beta["path"]) == ("b1", "/")
    assert (beta_by_host["name"], beta_by_host["method"], beta_by_host["path"]) == ("b1", "POST", "/p")
    assert (bare.status_code, bare.headers["location"]) == (301, "/beta/?z=1")


def test_a_raw_uri_is_forwarded_without_reencoding(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": [backends["w"].address]}))
    with client(nginx) as c:
        assert c.get("/web/a%2Fb/%7Ex?x=%20").json()["path"] == "/a%2Fb/%7Ex?x=%20"


def test_a_third_app_is_routed_without_a_reload(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"alpha": [backends["a"].address], "beta": [backends["b"].address]}))
    master = nginx.master_pid()
    assert master is not None
    workers, load = worker_pids(master), load_number(nginx)
    with client(nginx) as c:
        assert c.get("/gamma/").status_code == 404
        table = build_route_table(
            2,
            {"alpha": [backends["a"].address], "beta": [backends["b"].address], "gamma": [backends["c"].address]},
        )
        assert nginx.push_routes(table) == 2
        assert c.get("/gamma/").json()["name"] == "c"
        assert c.get("/", headers={"Host": "gamma.localhost"}).json()["name"] == "c"
        assert c.get("/alpha/").json()["name"] == "a"
    assert nginx.served_generation() == 2
    assert (nginx.master_pid(), worker_pids(master), load_number(nginx)) == (master, workers, load)
    assert "reconfiguring" not in nginx.settings.error_log.read_text()


def test_no_healthy_replica_is_503_and_an_unknown_app_404(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(3, {"empty": [], "web": [backends["w"].address]}))
    with client(nginx) as c:
        empty = c.get("/empty/x")
        empty_by_host = c.post("/", headers={"Host": "empty.localhost"})
        unknown = c.get("/nope/")
        root = c.get("/")
        not_a_label = c.get("/", headers={"Host": "a.b.localhost"})
    assert (empty.status_code, empty.json()) == (503, {"error": "no_healthy_replica", "app": "empty"})
    assert empty.headers["content-type"] == "application/json"
    assert empty_by_host.status_code == 503
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown_app", "app": "nope"})
    assert (root.status_code, root.json()) == (404, {"error": "unknown_app", "app": None})
    assert not_a_label.status_code == 404


# --- the control endpoint --------------------------------------------------------------------------------


def test_a_lower_generation_is_refused_and_the_same_one_accepted(nginx: NginxManager, backends: Backends) -> None:
    five = build_route_table(5, {"web": [backends["new"].address]})
    nginx.push_routes(five)
    assert nginx.push_routes(five) == 5  # idempotent
    old = build_route_table(3, {"web": [backends["old"].address]})
    with control(nginx) as c:
        refused = c.put("/_orchestry/routes", content=old.to_json())
        assert (refused.status_code, refused.json()) == (409, {"error": "stale_generation", "generation": 5})
        assert c.get("/_orchestry/routes").json() == json.loads(five.to_json())
    with pytest.raises(StaleGeneration) as info:
        nginx.push_routes(old)
    assert info.value.served == 5
    assert nginx.routes_file_generation() == 5  # the routes file was not rolled back either
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "new"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"apps": {}}',
        '{"generation": -1, "apps": {}}',
        '{"generation": 1.5, "apps": {}}',
        '{"generation": "9", "apps": {}}',
        '{"generation": 9, "apps": ["web"]}',
        '{"generation": 9, "apps": {"Web": []}}',
        '{"generation": 9, "apps": {"we;b": []}}',
        '{"generation": 9, "apps": {"web": "127.0.0.1:80"}}',
        '{"generation": 9, "apps": {"web": {"a": "127.0.0.1:80"}}}',
        '{"generation": 9, "apps": {"web": ["localhost:80"]}}',
        '{"generation": 9, "apps": {"web": ["127.0.0.1:99999"]}}',
        '{"generation": 9, "apps": {"web": ["127.0.0.1:80; return 200"]}}',
        '{"generation": 9, "apps": {"web": ["256.1.1.1:80"]}}',
        '{"generation": 9, "apps": {"web": ["127.0.0.1:80\\""]}}',
    ],
)
def test_the_control_endpoint_validates_what_it_is_sent(nginx: NginxManager, body: str) -> None:
    nginx.push_routes(build_route_table(1, {"web": ["127.0.0.1:9"]}))
    with control(nginx) as c:
        response = c.put("/_orchestry/routes", content=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] in ("invalid_json", "invalid_routes")
        assert c.get("/_orchestry/routes").json() == {"generation": 1, "apps": {"web": ["127.0.0.1:9"]}}


def test_the_control_endpoint_refuses_other_methods_and_paths(nginx: NginxManager) -> None:
    with control(nginx) as c:
        assert c.delete("/_orchestry/routes").status_code == 405
        assert c.get("/anything").status_code == 404
        assert c.get("/_orchestry/generation").json() == {"generation": None}


def test_the_control_port_listens_on_loopback_only(nginx: NginxManager) -> None:
    port = f"{nginx.settings.control_port:04X}"
    listening = [
        line.split()[1]
        for path in ("/proc/net/tcp", "/proc/net/tcp6")
        if Path(path).exists()
        for line in Path(path).read_text().splitlines()[1:]
        if line.split()[1].endswith(":" + port) and line.split()[3] == "0A"
    ]
    assert listening == ["0100007F:" + port]  # 127.0.0.1 (little-endian in /proc), nothing else


# --- restarts and configuration transactions -------------------------------------------------------------


def test_a_killed_nginx_restarts_routing_the_current_table(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": [backends["old"].address]}))
    nginx.push_routes(build_route_table(2, {"web": [backends["new"].address], "api": [backends["api"].address]}))
    master = nginx.master_pid()
    assert master is not None
    workers = worker_pids(master)
    os.kill(master, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while nginx.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not nginx.running()
    # The orphaned workers keep the listening sockets (and would serve a stale table): start ends them.
    assert nginx.ensure_running() is True
    assert nginx.master_pid() not in (None, master)
    assert nginx.served_generation() == 2
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "new"
        assert c.get("/api/").json()["name"] == "api"
    for pid in workers:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"
    assert nginx.ensure_running() is False


def test_a_corrupt_routes_file_does_not_keep_nginx_from_starting(tmp_path: Path) -> None:
    manager = NginxManager(make_settings(tmp_path / "nginx"))
    manager.settings.routes_path.parent.mkdir(parents=True)
    manager.settings.routes_path.write_text('{"generation": 3, "apps": {"web": ["localhost:80"]}}')
    try:
        manager.start()
        assert manager.served_generation() is None
        assert "ignoring routes file" in manager.settings.error_log.read_text()
        assert manager.push_routes(build_route_table(4, {"web": ["127.0.0.1:9"]})) == 4
    finally:
        manager.stop()
        manager.close()


def test_a_refused_config_leaves_the_running_one(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": [backends["w"].address]}))
    running_text = nginx.settings.conf_file.read_text()
    master, load = nginx.master_pid(), load_number(nginx)
    broken = running_text.replace("server_tokens off;", "server_tokens off;\n    no_such_directive on;")
    with pytest.raises(ConfigRefused, match='unknown directive "no_such_directive"'):
        nginx.render_and_apply(broken)
    with pytest.raises(ConfigRefused, match="unexpected end of file"):
        nginx.render_and_apply(running_text[: running_text.rindex("}")])
    # nginx -t binds too (it only lets a port in use pass): an address not on this machine is refused.
    with pytest.raises(ConfigRefused, match="Cannot assign requested address"):
        nginx.render_and_apply(render_config(moved_settings(nginx, bind_address="192.0.2.1")))
    assert nginx.settings.conf_file.read_text() == running_text
    assert not list(nginx.settings.conf_file.parent.glob(".*.tmp"))
    assert (nginx.master_pid(), load_number(nginx)) == (master, load)
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "w"


def moved_settings(manager: NginxManager, **changes: Any) -> NginxSettings:
    s = manager.settings
    fields: dict[str, Any] = {"listen_port": s.listen_port, "control_port": s.control_port, **changes}
    return make_settings(s.prefix, **fields)


def test_a_port_in_use_fails_the_reload_only_if_it_stays_taken(nginx: NginxManager, backends: Backends) -> None:
    """`nginx -t` lets a port in use pass; the reload retries bind() for 2.5 s, so it fails only then."""
    nginx.push_routes(build_route_table(1, {"web": [backends["w"].address]}))
    running_text = nginx.settings.conf_file.read_text()
    master, load = nginx.master_pid(), load_number(nginx)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    with taken, pytest.raises(ReloadFailed, match="still could not bind"):
        nginx.render_and_apply(render_config(moved_settings(nginx, listen_port=port)))
    assert nginx.settings.conf_file.read_text() == running_text  # rolled back
    assert (nginx.master_pid(), load_number(nginx)) == (master, load)
    with client(nginx) as c:
        assert c.get("/web/").json()["name"] == "w"

    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen(1)
    threading.Timer(0.6, taken.close).start()  # freed while nginx retries: the reload then succeeds
    text = render_config(moved_settings(nginx, listen_port=port))
    assert nginx.render_and_apply(text) is True
    assert nginx.settings.conf_file.read_text() == text
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as c:
        assert c.get("/web/").json()["name"] == "w"  # nginx answers on the new port


def test_a_new_skeleton_is_reloaded_and_keeps_the_routes(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(4, {"web": [backends["w"].address]}))
    master, load = nginx.master_pid(), load_number(nginx)
    text = render_config(moved_settings(nginx, proxy_read_timeout=30, domain="apps.test"))
    assert nginx.render_and_apply(text) is True
    assert nginx.settings.conf_file.read_text() == text
    assert nginx.master_pid() == master
    # old workers may accept a connection for a few ms after the reload: ask until a new one answers
    deadline = time.monotonic() + 2
    while load_number(nginx) <= load and time.monotonic() < deadline:
        time.sleep(0.01)
    assert load_number(nginx) > load
    assert nginx.render_and_apply(text) is False  # unchanged: no reload
    assert nginx.served_generation() == 4  # the shared dict survives a reload
    with client(nginx) as c:
        assert c.get("/", headers={"Host": "web.apps.test"}).json()["name"] == "w"


def test_stop_and_running_act_only_on_our_nginx(tmp_path: Path) -> None:
    manager = NginxManager(make_settings(tmp_path / "other"))
    manager.settings.pid_file.parent.mkdir(parents=True)
    manager.settings.pid_file.write_text(f"{os.getpid()}\n")  # a pid file naming a process that is not ours
    assert not manager.running()
    manager.stop()  # must not signal this test process
    assert manager.served_generation() is None
    manager.close()


# --- retries and logs ------------------------------------------------------------------------------------


def test_a_refused_connection_is_retried_on_another_replica(nginx: NginxManager, backends: Backends) -> None:
    good = backends["good"]
    nginx.push_routes(build_route_table(1, {"web": [refused_address(), good.address]}))
    with client(nginx) as c:
        gets = [c.get("/web/").status_code for _ in range(4)]
        # A refused connection never carried the request, so even a POST goes to the next replica.
        posts = [c.post("/web/", content=b"x").status_code for _ in range(4)]
    assert gets == [200] * 4
    assert posts == [200] * 4
    assert len(good.hits) == 8


def test_a_post_that_reached_a_replica_is_not_retried(nginx: NginxManager, backends: Backends) -> None:
    good, resetter = backends["good"], Resetter()
    try:
        nginx.push_routes(build_route_table(1, {"web": [resetter.address, good.address]}))
        with client(nginx) as c:
            posts = [c.post("/web/", content=b"x").status_code for _ in range(4)]
            gets = [c.get("/web/").status_code for _ in range(4)]
    finally:
        resetter.close()
    # The POST sent to the resetting replica fails; nginx then marks that replica down for a moment
    # (tests/test_nginx_down.py), so the others all go to the good one.
    assert sorted(posts) == [200, 200, 200, 502]
    assert gets == [200] * 4
    assert [m for m, _ in good.hits].count("POST") == 3
    assert resetter.requests == 1


def test_large_bodies_pass_while_workers_cannot_reach_the_prefix(nginx: NginxManager, backends: Backends) -> None:
    """Unprivileged workers never reach the 0700 prefix: bodies stay in memory, big responses are streamed."""
    nginx.push_routes(build_route_table(1, {"web": [backends["w"].address]}))
    with client(nginx) as c:
        response = c.post("/web/", content=b"x" * 2_000_000)
        assert response.status_code == 200, nginx.settings.error_log.read_text()[-500:]
        big = c.get("/web/?big=3000000")
    assert big.status_code == 200 and len(big.content) == 3_000_000, nginx.settings.error_log.read_text()[-500:]
    assert "temporary file" not in nginx.settings.error_log.read_text()


def settled_workers(master: int, timeout: float = 5.0) -> set[int]:
    """The master's children once each has set its title, which nginx does only after dropping root.

    A child caught between fork() and setuid() still runs as root under the master's title: CI met one.
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = worker_pids(master)
        titles = {pid: _cmdline(pid) for pid in workers}
        if workers and all("worker process" in title for title in titles.values()):
            return workers
        assert time.monotonic() < deadline, titles
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "worker process (exited)"


def test_workers_never_run_as_root(nginx: NginxManager) -> None:
    master = int(nginx.settings.pid_file.read_text())
    workers = settled_workers(master)
    uids = {int(_status(pid)["Uid"].split()[0]) for pid in workers}
    assert 0 not in uids
    if os.geteuid() == 0:
        assert uids == {pwd.getpwnam("nobody").pw_uid}
        assert int(_status(master)["Uid"].split()[0]) == 0  # only the master (ports, logs) stays root


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_access_log_is_json_per_request(nginx: NginxManager, backends: Backends) -> None:
    w = backends["w"]
    bad = refused_address()
    nginx.push_routes(build_route_table(7, {"web": [bad, w.address], "empty": []}))
    with client(nginx) as c:
        c.get("/web/a?b=1")
        c.get("/web/c")
        c.get("/empty/")
    raw_request(nginx, b'GET /web/"quote"\\x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
    lines = access_log(nginx, 4)
    assert len(lines) == 4
    first = lines[0]
    assert first["app"] == "web" and first["generation"] == 7 and first["status"] == 200
    assert first["method"] == "GET" and first["uri"] == "/web/a?b=1"
    assert isinstance(first["request_time"], float)
    upstreams = [line["upstream"] for line in lines[:2]]
    # One of the two went to the refused replica first, and says so: "bad, good".
    assert sorted(upstreams, key=len) == [w.address, f"{bad}, {w.address}"]
    assert re.fullmatch(r"[0-9.]+(, [0-9.]+)?", lines[0]["upstream_response_time"])
    assert (lines[2]["app"], lines[2]["status"], lines[2]["upstream"]) == ("empty", 503, "")
    assert lines[3]["uri"] == '/web/"quote"\\x'  # escaped by escape=json: the line still parses


def test_in_flight_counts_requests_until_they_end(nginx: NginxManager, backends: Backends) -> None:
    slow, other = backends["slow"], backends["other"]
    nginx.push_routes(build_route_table(1, {"web": [slow.address], "api": [other.address]}))
    assert nginx.in_flight(slow.address) == 0
    with client(nginx) as c:
        threads = [threading.Thread(target=c.get, args=("/web/?sleep=0.6",)) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 3
        while nginx.in_flight(slow.address) != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert nginx.in_flight(slow.address) == 2
        # Leaving the table does not end a request: it is still in flight until it is answered.
        nginx.push_routes(build_route_table(2, {"web": [], "api": [other.address]}))
        assert nginx.in_flight(slow.address) == 2
        assert nginx.in_flight(other.address) == 0
        # The route mirror's one call a pass: the generation and every open count, read together.
        assert nginx.served_state() == (2, {slow.address: 2})
        for thread in threads:
            thread.join(5)
    deadline = time.monotonic() + 2
    while nginx.in_flight(slow.address) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert nginx.in_flight(slow.address) == 0
    assert nginx.served_state() == (2, {})
    with control(nginx) as c:
        assert c.get("/_orchestry/inflight").json() == {}
        assert c.get("/_orchestry/inflight", params={"address": "localhost:80"}).status_code == 400


def wait_counted(nginx: NginxManager, app: str, *, requests: int, errors: int, seconds: float = 5.0) -> None:
    """Until nginx's raw counters for `app` reach these figures (each request's log phase has run)."""
    deadline = time.monotonic() + seconds
    while True:
        entry = nginx.traffic_counters().get("apps", {}).get(app, {})
        if entry.get("requests", 0) >= requests and entry.get("errors", 0) >= errors:
            return
        assert time.monotonic() < deadline, f"nginx counted {entry} for {app}, not {requests} requests, {errors} errors"
        time.sleep(0.02)


def test_traffic_is_counted_per_app_and_replica(nginx: NginxManager, backends: Backends) -> None:
    """nginx's own counters, as the metrics job reads them: exact per app, per replica, 5xx and latency."""
    fast, slow, other, resetter = backends["fast"], backends["slow"], backends["other"], Resetter()
    try:
        nginx.push_routes(build_route_table(1, {"web": [fast.address, slow.address], "api": [other.address]}))
        meter = TrafficMeter(nginx)
        assert meter() == {}  # one reading gives no rate
        with client(nginx) as c:
            for _ in range(10):
                assert c.get("/web/?sleep=0.12").status_code == 200
            for _ in range(3):
                c.get("/api/")
            c.get("/nope/")  # unknown app: not counted anywhere
        nginx.push_routes(build_route_table(2, {"web": [fast.address], "api": [resetter.address]}))
        with client(nginx) as c:
            assert c.post("/api/", content=b"x").status_code == 502  # reached a replica that reset: a 5xx
        # nginx counts a request in its log phase, after the client has the answer: wait for the last one
        wait_counted(nginx, "api", requests=4, errors=1)
        result = meter()
    finally:
        resetter.close()
    web, api = result["web"], result["api"]
    assert web.requests == 10 and web.error_rate == 0 and web.active_connections == 0
    assert web.replicas.keys() == {fast.address, slow.address}
    assert web.p95_ms is not None and 100 <= web.p95_ms <= 2000  # every request slept 120 ms (slower when busy)
    assert api.requests == 4 and api.error_rate == 0.25
    assert meter()["web"].requests == 0  # the next interval starts where this one ended


def test_in_flight_moves_with_a_retry(nginx: NginxManager, backends: Backends) -> None:
    bad, good = refused_address(), backends["good"]
    nginx.push_routes(build_route_table(1, {"web": [bad, good.address]}))
    with client(nginx) as c:
        for _ in range(4):
            assert c.get("/web/").status_code == 200
    deadline = time.monotonic() + 2  # the log phase runs just after the response
    while nginx.in_flight(good.address) != 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (nginx.in_flight(bad), nginx.in_flight(good.address)) == (0, 0)


# --- zero failures while the table changes ---------------------------------------------------------------


def test_no_request_fails_while_the_peers_change(nginx: NginxManager, backends: Backends) -> None:
    peers = [backends[f"r{i}"].address for i in range(3)]
    nginx.push_routes(build_route_table(1, {"web": peers[:2]}))
    stop = threading.Event()
    results: dict[str, int] = {"ok": 0, "failed": 0}
    errors: list[str] = []

    def load() -> None:
        with client(nginx) as c:
            while not stop.is_set():
                try:
                    response = c.get("/web/")
                    results["ok" if response.status_code == 200 else "failed"] += 1
                except httpx.HTTPError as exc:
                    results["failed"] += 1
                    errors.append(repr(exc))

    thread = threading.Thread(target=load)
    thread.start()
    started = time.monotonic()
    try:
        for generation in range(2, 202):
            nginx.push_routes(build_route_table(generation, {"web": peers[: 2 + generation % 2]}))
            # Let a few requests through between changes (the pushes would otherwise hog the GIL).
            seen = results["ok"] + results["failed"]
            deadline = time.monotonic() + 1
            while results["ok"] + results["failed"] < seen + 3 and time.monotonic() < deadline:
                time.sleep(0.0005)
    finally:
        stop.set()
        thread.join(10)
    elapsed = time.monotonic() - started
    assert results["failed"] == 0, errors[:5]
    assert results["ok"] > 200  # about 3 per change; fewer only if the machine is very busy
    assert nginx.served_generation() == 201
    assert elapsed < 20  # about 2.5 s here; generous for a busy CI machine
    hits = {b.name: len(b.hits) for b in backends.values()}
    assert all(count > 0 for count in hits.values()), hits
    with contextlib.suppress(FileNotFoundError):
        assert "[error]" not in nginx.settings.error_log.read_text()
