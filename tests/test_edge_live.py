"""The edge on a real nginx: host and path routes, certificates by SNI, redirects, HSTS and ACME answers,
all pushed through the control endpoint without a reload (same master, same workers, same load number)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from test_nginx_live import Backends, load_number, worker_pids
from tlsutil import ThrowawayCA, served_certificate

from orchestry.nginx.edge import EdgeCert, edge_body
from orchestry.nginx.manager import NginxError, NginxManager
from orchestry.nginx.routes import build_route_table
from orchestry.workflows.public_routes import RouteRule

from conftest import running_nginx

pytestmark = pytest.mark.usefixtures("nginx_required")


@pytest.fixture
def edge_nginx(tmp_path: Path) -> Iterator[NginxManager]:
    with running_nginx(tmp_path, tls=True) as manager:
        yield manager


def plain(manager: NginxManager) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{manager.settings.listen_port}", timeout=5, trust_env=False)


def unchanged(manager: NginxManager) -> tuple[int | None, set[int], int]:
    master = manager.master_pid()
    assert master is not None
    return master, worker_pids(master), load_number(manager)


def test_host_and_path_routes_longest_prefix_and_strip_without_a_reload(
    edge_nginx: NginxManager, backends: Backends
) -> None:
    web, api, v2, wild = backends["web"], backends["api"], backends["v2"], backends["wild"]
    edge_nginx.push_routes(
        build_route_table(
            1, {"web": [web.address], "api": [api.address], "apiv2": [v2.address], "wild": [wild.address]}
        )
    )
    before = unchanged(edge_nginx)
    rules = [
        RouteRule("api", "example.test", "/api", strip_prefix=True),
        RouteRule("apiv2", "example.test", "/api/v2"),
        RouteRule("web", "example.test", "/"),
        RouteRule("wild", "*.apps.test", "/"),
    ]
    with plain(edge_nginx) as c:
        assert c.get("/anything", headers={"Host": "example.test"}).status_code == 404  # not routed yet
        assert edge_nginx.push_edge(edge_body(1, rules, ["web"], [], {})) == 1
        root = c.get("/page?x=1", headers={"Host": "example.test"}).json()
        stripped = c.get("/api/users?id=3", headers={"Host": "EXAMPLE.test"}).json()
        bare = c.get("/api", headers={"Host": "example.test"}).json()
        longer = c.get("/api/v2/x", headers={"Host": "example.test"}).json()
        not_prefix = c.get("/apiary", headers={"Host": "example.test"}).json()
        wildcard = c.get("/w", headers={"Host": "one.apps.test"}).json()
        too_deep = c.get("/w", headers={"Host": "a.b.apps.test"})
        default_off = c.get("/", headers={"Host": "web.localhost"})
        default_off_path = c.get("/web/")
        default_on = c.get("/", headers={"Host": "api.localhost"}).json()
    assert (root["name"], root["path"]) == ("web", "/page?x=1")
    assert (stripped["name"], stripped["path"]) == ("api", "/users?id=3")
    assert stripped["headers"]["X-Forwarded-Prefix"] == "/api"
    assert (bare["name"], bare["path"]) == ("api", "/")
    assert (longer["name"], longer["path"]) == ("v2", "/api/v2/x")  # longest prefix, not stripped
    assert (not_prefix["name"], not_prefix["path"]) == ("web", "/apiary")
    assert (wildcard["name"], too_deep.status_code) == ("wild", 404)
    assert (default_off.status_code, default_off_path.status_code) == (404, 404)
    assert default_on["name"] == "api"
    assert unchanged(edge_nginx) == before
    assert "reconfiguring" not in edge_nginx.settings.error_log.read_text()


def test_a_certificate_pushed_is_served_by_sni_within_a_second_without_a_reload(
    edge_nginx: NginxManager, backends: Backends
) -> None:
    edge_nginx.push_routes(build_route_table(1, {"web": [backends["web"].address]}))
    port = edge_nginx.settings.tls_port
    assert port is not None
    ca = ThrowawayCA()
    before = unchanged(edge_nginx)
    fallback = served_certificate(port, "shop.test")
    assert fallback.subject.rfc4514_string() == "CN=orchestry-no-certificate"
    cert_pem, key_pem = ca.leaf("shop.test", "www.shop.test")
    rules = [RouteRule("web", "shop.test", "/", tls="custom", hsts=True)]
    started = time.monotonic()
    edge_nginx.push_edge(
        edge_body(1, rules, [], [EdgeCert(7, ("shop.test", "www.shop.test"), cert_pem, key_pem, None)], {})
    )
    served = served_certificate(port, "shop.test", ca.pem)  # verified against the CA: chain and name
    elapsed = time.monotonic() - started
    assert served == x509.load_pem_x509_certificate(cert_pem.encode())
    assert elapsed < 1.0
    assert served_certificate(port, "www.shop.test", ca.pem) == served
    assert served_certificate(port, "other.test").subject == fallback.subject  # no certificate: the fallback
    # A renewal (a later expiry for the same name) replaces it at the next handshake.
    renewed_pem, renewed_key = ca.leaf("shop.test", days=60)
    certs = [
        EdgeCert(7, ("shop.test", "www.shop.test"), cert_pem, key_pem, None),
        EdgeCert(
            8,
            ("shop.test",),
            renewed_pem,
            renewed_key,
            x509.load_pem_x509_certificate(renewed_pem.encode()).not_valid_after_utc,
        ),
    ]
    edge_nginx.push_edge(edge_body(2, rules, [], certs, {}))
    assert served_certificate(port, "shop.test", ca.pem) == x509.load_pem_x509_certificate(renewed_pem.encode())
    # HTTPS reaches the app, with HSTS as the route asks.
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=5, trust_env=False) as c:
        response = c.get("/x", headers={"Host": "shop.test"}, extensions={"sni_hostname": "shop.test"})
    assert response.json()["headers"]["X-Forwarded-Proto"] == "https"
    assert response.headers["strict-transport-security"] == "max-age=31536000"
    assert unchanged(edge_nginx) == before


def test_redirect_to_https_and_acme_answers_on_the_plain_port(edge_nginx: NginxManager, backends: Backends) -> None:
    edge_nginx.push_routes(build_route_table(1, {"web": [backends["web"].address]}))
    rules = [RouteRule("web", "secure.test", "/", tls="custom", redirect_http=True), RouteRule("web", "open.test")]
    edge_nginx.push_edge(edge_body(1, rules, [], [], {"tok-en_1": "tok-en_1.thumbprint"}))
    port = edge_nginx.settings.tls_port
    with plain(edge_nginx) as c:
        get = c.get("/a?b=1", headers={"Host": "secure.test"})
        post = c.post("/a", headers={"Host": "secure.test"})
        open_host = c.get("/a", headers={"Host": "open.test"})
        answer = c.get("/.well-known/acme-challenge/tok-en_1", headers={"Host": "secure.test"})
        unknown = c.get("/.well-known/acme-challenge/nope", headers={"Host": "open.test"})
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=5, trust_env=False) as s:
            https = s.get("/a", headers={"Host": "secure.test"})
    assert (get.status_code, get.headers["location"]) == (301, f"https://secure.test:{port}/a?b=1")
    assert (post.status_code, post.headers["location"]) == (308, f"https://secure.test:{port}/a")
    assert (open_host.status_code, https.status_code) == (200, 200)
    assert "strict-transport-security" not in https.headers  # the route does not ask for it
    assert (answer.status_code, answer.text) == (200, "tok-en_1.thumbprint")
    assert unknown.json()["path"] == "/.well-known/acme-challenge/nope"  # not a challenge: the app's own path


def test_the_edge_endpoint_needs_the_secret_and_refuses_bad_bodies(edge_nginx: NginxManager) -> None:
    base = f"http://127.0.0.1:{edge_nginx.settings.control_port}"
    body = '{"version":1,"rules":[],"off":[],"certs":{},"hosts":{},"challenges":{}}'
    with httpx.Client(base_url=base, timeout=5, trust_env=False) as c:
        assert c.put("/_orchestry/edge", content=body).status_code == 401
    for bad in (
        '{"version":1,"rules":[{"app":"x","host":"a b","path":"/"}],"off":[],"certs":{},"hosts":{},"challenges":{}}',
        '{"version":1,"rules":[],"off":[],"certs":{},"hosts":{"a.test":"9"},"challenges":{}}',
        '{"version":-1,"rules":[],"off":[],"certs":{},"hosts":{},"challenges":{}}',
    ):
        with pytest.raises(NginxError, match="400"):
            edge_nginx.push_edge(bad)
    assert edge_nginx.edge_version() is None


class WebsocketEcho:
    """A websocket server (RFC 6455, text frames up to 125 bytes) that echoes each message upper-cased, and
    records the handshake headers it received."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.headers: dict[str, str] = {}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                for line in head.decode().split("\r\n")[1:]:
                    if ": " in line:
                        name, _, value = line.partition(": ")
                        self.headers[name.lower()] = value
                accept = base64.b64encode(
                    hashlib.sha1((self.headers["sec-websocket-key"] + WS_GUID).encode()).digest()
                ).decode()
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
                )
                while True:
                    message = read_frame(conn)
                    if message is None:
                        return
                    conn.sendall(bytes([0x81, len(message)]) + message.upper())  # server frames are unmasked

    def close(self) -> None:
        self.sock.close()


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_frame(conn: socket.socket) -> bytes | None:
    """One text frame's payload (masked or not); None on a close frame or a closed connection."""
    header = conn.recv(2)
    if len(header) < 2 or header[0] & 0x0F == 0x8:
        return None
    length, masked = header[1] & 0x7F, header[1] & 0x80
    mask = conn.recv(4) if masked else b"\0\0\0\0"
    payload = b""
    while len(payload) < length:
        payload += conn.recv(length - len(payload))
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_websocket_exchange_passes_through_a_host_route(edge_nginx: NginxManager) -> None:
    echo = WebsocketEcho()
    try:
        edge_nginx.push_routes(build_route_table(1, {"chat": [echo.address]}))
        edge_nginx.push_edge(edge_body(1, [RouteRule("chat", "chat.example.test", "/ws")], [], [], {}))
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", edge_nginx.settings.listen_port), timeout=5) as conn:
            conn.sendall(
                f"GET /ws/room HTTP/1.1\r\nHost: chat.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            assert head.startswith(b"HTTP/1.1 101 "), head
            received = []
            for text in (b"hello", b"again"):
                mask = os.urandom(4)
                conn.sendall(
                    bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
                )
                received.append(read_frame(conn))
        assert received == [b"HELLO", b"AGAIN"]
        assert echo.headers["upgrade"] == "websocket" and echo.headers["connection"].lower() == "upgrade"
    finally:
        echo.close()
