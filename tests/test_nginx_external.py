"""`nginx: external`: an existing nginx (its administrator's configuration, pid and sites) that includes the
one file Orchestry writes. Real nginx with Debian's Lua module; the test plays the administrator: it writes
the main configuration, starts that nginx and restarts it, Orchestry only renders, tests and reloads.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from test_nginx_live import Backends, free_port
from tlsutil import ThrowawayCA, served_certificate

from orchestry.nginx.edge import EdgeCert, edge_body
from orchestry.nginx.external import ExternalNginx, ExternalPaths
from orchestry.nginx.manager import ConfigRefused, NginxUnavailable, ReloadFailed, process_user
from orchestry.nginx.render import DEFAULT_MODULES, NginxSettings
from orchestry.nginx.routes import build_route_table
from orchestry.workflows.public_routes import RouteRule

from conftest import hello, post, start_server, stop_server, wait_for

pytestmark = pytest.mark.usefixtures("nginx_required")  # fails, never skips, when nginx is missing

MAIN_CONF = """\
{user}
{modules}
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log notice;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {home}/temp;
    proxy_temp_path {home}/temp;
    fastcgi_temp_path {home}/temp;
    uwsgi_temp_path {home}/temp;
    scgi_temp_path {home}/temp;
    access_log off;
    default_type text/plain;
    keepalive_timeout 65;
    server {{
        listen 127.0.0.1:{site_port};
        location / {{ return 200 "the administrator's site\\n"; }}
    }}
    include {home}/conf.d/*.conf;
}}
"""


@dataclass
class AdminNginx:
    """The administrator's nginx: its own configuration and pid file; Orchestry's file sits in conf.d/."""

    home: Path
    site_port: int

    @property
    def conf(self) -> Path:
        return self.home / "nginx.conf"

    @property
    def include(self) -> Path:
        return self.home / "conf.d" / "orchestry.conf"

    def write(self) -> None:
        (self.home / "conf.d").mkdir(parents=True, exist_ok=True)
        (self.home / "temp").mkdir(exist_ok=True)
        user = process_user()
        self.conf.write_text(
            MAIN_CONF.format(
                user=f"user {user};" if user else "",
                modules="\n".join(f"load_module {m};" for m in DEFAULT_MODULES),
                home=self.home,
                site_port=self.site_port,
            )
        )

    def start(self) -> None:
        subprocess.run(["nginx", "-c", str(self.conf)], check=True, capture_output=True, timeout=20)
        wait_for(lambda: self.pid() is not None and self.site_ok(), timeout=10)

    def pid(self) -> int | None:
        try:
            pid = int((self.home / "nginx.pid").read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        wait_for(lambda: self.pid() is None, timeout=15)

    def site_ok(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.site_port}/", timeout=2, trust_env=False)
        except httpx.TransportError:
            return False
        return response.text == "the administrator's site\n"

    def loads(self) -> int:
        """Configuration loads so far, counted in its error log (one "start worker processes" burst each)."""
        text = (self.home / "error.log").read_text()
        return text.count('using the "epoll" event method') + text.count("reconfiguring")


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[AdminNginx]:
    nginx = AdminNginx(tmp_path / "etc-nginx", free_port())
    nginx.write()
    nginx.start()
    yield nginx
    nginx.stop()


def manager_for(admin: AdminNginx, tmp_path: Path, timeout: float = 5.0, **paths: str) -> ExternalNginx:
    settings = NginxSettings(
        prefix=tmp_path / "orchestry-nginx", listen_port=free_port(), control_port=free_port(), domain="apps.test"
    )
    return ExternalNginx(settings, ExternalPaths(conf=admin.conf, include=admin.include, **paths), timeout=timeout)


def get(manager: ExternalNginx, path: str, host: str | None = None) -> httpx.Response:
    headers = {"Host": host} if host else {}
    url = f"http://127.0.0.1:{manager.settings.listen_port}{path}"
    return httpx.get(url, headers=headers, timeout=5, trust_env=False)


def test_routes_through_an_existing_nginx_without_owning_it(
    admin: AdminNginx, tmp_path: Path, backends: Backends
) -> None:
    pid = admin.pid()
    manager = manager_for(admin, tmp_path)
    try:
        manager.start()  # writes the include, tests the administrator's whole configuration, reloads it
        assert admin.include.read_text() == manager.render()
        assert "load_module" not in admin.include.read_text() and "\npid " not in admin.include.read_text()
        assert manager.running() and admin.pid() == pid  # reloaded, never restarted
        assert admin.site_ok()  # the administrator's site serves on
        table = {"web": [backends["web-1"].address], "api": [backends["api-1"].address]}
        assert manager.push_routes(build_route_table(1, table)) == 1
        assert get(manager, "/", host="web.apps.test").json()["name"] == "web-1"
        assert get(manager, "/api/v1/x").json()["path"] == "/v1/x"  # the prefix is stripped
        assert get(manager, "/api/").json()["name"] == "api-1"
        loads = admin.loads()
        assert manager.render_and_apply(manager.render()) is False  # unchanged: no reload
        assert manager.push_routes(build_route_table(2, {**table, "web": []})) == 2  # no reload either
        assert get(manager, "/", host="web.apps.test").status_code == 503
        assert admin.loads() == loads
        manager.stop()  # not ours: it keeps serving
        assert admin.pid() == pid and get(manager, "/api/").status_code == 200
    finally:
        manager.close()


def https_get(port: int, host: str, ca_pem: str) -> dict[str, Any]:
    """GET / over HTTPS on 127.0.0.1:port with SNI and Host `host`, verified against `ca_pem`."""
    context = ssl.create_default_context(cadata=ca_pem)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return dict(json.loads(body))


def test_https_with_certificates_by_sni_through_an_existing_nginx(
    admin: AdminNginx, tmp_path: Path, backends: Backends
) -> None:
    settings = NginxSettings(
        prefix=tmp_path / "orchestry-nginx",
        listen_port=free_port(),
        control_port=free_port(),
        tls_port=free_port(),
        domain="apps.test",
    )
    manager = ExternalNginx(settings, ExternalPaths(conf=admin.conf, include=admin.include))
    port = settings.tls_port or 0
    host = "secure.example.test"
    ca = ThrowawayCA()
    try:
        manager.start()  # the include carries the TLS server; the administrator's nginx loads it
        pid, loads = admin.pid(), admin.loads()
        manager.push_routes(build_route_table(1, {"web": [backends["web-1"].address]}))
        rules = [RouteRule("web", host, "/")]
        pem, key = ca.leaf(host, days=20)
        first = EdgeCert(1, (host,), pem, key, datetime.now(UTC) + timedelta(days=20))
        manager.push_edge(edge_body(1, rules, [], [first], {}))
        assert served_certificate(port, host, ca.pem) == x509.load_pem_x509_certificate(first.cert_pem.encode())
        assert https_get(port, host, ca.pem)["name"] == "web-1"
        pem, key = ca.leaf(host, days=25)
        renewed = EdgeCert(2, (host,), pem, key, datetime.now(UTC) + timedelta(days=25))
        manager.push_edge(edge_body(2, rules, [], [first, renewed], {}))
        leaf = x509.load_pem_x509_certificate(renewed.cert_pem.encode())
        wait_for(lambda: served_certificate(port, host, ca.pem) == leaf, 5)
        assert admin.pid() == pid and admin.loads() == loads  # routes and certificates: no reload
        assert admin.site_ok()
    finally:
        manager.close()


def test_a_refused_configuration_never_replaces_the_running_one(
    admin: AdminNginx, tmp_path: Path, backends: Backends
) -> None:
    manager = manager_for(admin, tmp_path)
    try:
        manager.start()
        manager.push_routes(build_route_table(1, {"web": [backends["web-1"].address]}))
        good = admin.include.read_text()
        with pytest.raises(ConfigRefused, match="unknown directive"):
            manager.render_and_apply(good + "\nthis_is_not_nginx on;\n")
        assert admin.include.read_text() == good  # the previous text is back before anything reloaded
        assert get(manager, "/web/").json()["name"] == "web-1" and admin.site_ok()

        # Passes `nginx -t` but cannot load: its port is taken. The running configuration stays, so does the file.
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            moved = NginxSettings(
                prefix=manager.settings.prefix,
                listen_port=taken.getsockname()[1],
                control_port=manager.settings.control_port,
                domain="apps.test",
            )
            mover = ExternalNginx(moved, manager.paths, timeout=3)
            try:
                with pytest.raises(ReloadFailed):
                    mover.render_and_apply(mover.render())
            finally:
                mover.close()
        assert admin.include.read_text() == good
        assert get(manager, "/web/").json()["name"] == "web-1"
    finally:
        manager.close()


def test_a_restarted_nginx_routes_the_current_table_at_once(
    admin: AdminNginx, tmp_path: Path, backends: Backends
) -> None:
    manager = manager_for(admin, tmp_path)
    try:
        manager.start()
        manager.push_routes(build_route_table(7, {"web": [backends["web-1"].address]}))
        admin.stop()
        with pytest.raises(NginxUnavailable):
            manager.ensure_running()  # never started from here
        admin.start()  # by its administrator
        assert manager.served_generation() == 7  # loaded from the routes file as it started
        assert get(manager, "/", host="web.apps.test").json()["name"] == "web-1"
    finally:
        manager.close()


def test_a_configured_reload_command_is_used_and_its_failure_is_reported(admin: AdminNginx, tmp_path: Path) -> None:
    marker = tmp_path / "reloaded"
    command = f"sh -c 'touch {marker} && kill -HUP {admin.pid()}'"
    manager = manager_for(admin, tmp_path, reload_command=command)
    try:
        manager.start()
        assert marker.exists() and manager.running()
    finally:
        manager.close()
    admin.include.unlink()
    failing = manager_for(admin, tmp_path, reload_command="/bin/false")
    try:
        with pytest.raises(NginxUnavailable, match="reload command failed"):
            failing.render_and_apply(failing.render())
        assert admin.include.exists()  # it passed `nginx -t`: it stays for the next start of that nginx
    finally:
        failing.close()


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ({"conf": "etc/nginx.conf", "include": "/etc/nginx/conf.d/o.conf"}, "nginx_conf"),
        ({"conf": "/etc/nginx/nginx.conf", "include": "/etc/nginx/conf.d/o conf"}, "nginx_include"),
        ({"conf": "/etc/nginx/nginx.conf", "include": "/etc/nginx/nginx.conf"}, "must not be the main"),
        ({"conf": "/etc/n.conf", "include": "/etc/o.conf", "reload_command": "sh -c 'unclosed"}, "nginx_reload"),
        ({"conf": "/etc/n.conf", "include": "/etc/o.conf", "reload_command": "'' -s reload"}, "nginx_reload"),
    ],
)
def test_external_paths_are_checked(paths: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExternalPaths(**{k: Path(v) if k != "reload_command" else v for k, v in paths.items()})  # type: ignore[arg-type]


@pytest.mark.usefixtures("testapp_image")
def test_serve_drives_an_existing_nginx(admin: AdminNginx, db_url: str, tmp_path: Path) -> None:
    """`orchestry serve --nginx external`: an app deployed through the API answers through that nginx."""
    proxy_port = free_port()
    env = {
        "ORCHESTRY_NGINX": "external",
        "ORCHESTRY_NGINX_CONF": str(admin.conf),
        "ORCHESTRY_NGINX_INCLUDE": str(admin.include),
        "ORCHESTRY_PROXY_PORT": str(proxy_port),
    }
    (tmp_path / "serve").mkdir()
    server = start_server(db_url, tmp_path / "serve", extra_env=env)
    try:
        pid = admin.pid()
        assert post(server, hello()).status_code in (200, 201)
        up = server.http.post("/api/v1/apps/hello/up", json={"replicas": 2})
        assert up.status_code == 202, up.text

        def answers() -> bool:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{proxy_port}/", headers={"Host": "hello.localhost"}, timeout=2, trust_env=False
                )
            except httpx.TransportError:
                return False
            return response.status_code == 200

        wait_for(answers, timeout=60)
        assert admin.pid() == pid and admin.site_ok()
        served = httpx.get(
            f"http://127.0.0.1:{server.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes", trust_env=False
        ).json()
        assert len(served["apps"]["hello"]) == 2
    finally:
        stop_server(server)
    assert admin.pid() == pid  # Orchestry's shutdown leaves the administrator's nginx running
