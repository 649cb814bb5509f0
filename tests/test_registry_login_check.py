"""probe/registry.py against registries of our own on loopback: a Bearer (token server) one here, as Docker Hub
and cloud registries answer; the Basic one (Debian's docker-registry with htpasswd) is in
tests/test_private_registry.py."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from orchestry.probe.registry import check_login
from orchestry.testapp.ports import free_port

USER, PASSWORD = "ci", "s3cret"


class TokenRegistry(BaseHTTPRequestHandler):
    """/v2/ asks for a Bearer token from /token, which takes USER/PASSWORD by Basic auth; /other answers 404."""

    asked: ClassVar[list[dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        url = urlparse(self.path)
        host = f"127.0.0.1:{self.server.server_port}"  # type: ignore[attr-defined]
        if url.path == "/v2/":
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="test-registry"')
        elif url.path == "/token":
            TokenRegistry.asked.append(parse_qs(url.query))
            good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            self.send_response(200 if self.headers.get("Authorization") == good else 401)
        else:
            self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_server_takes_the_right_password_only(token_registry: str) -> None:
    TokenRegistry.asked.clear()
    ok = check_login(token_registry, USER, PASSWORD)
    assert ok.outcome == "ok" and ok.url == f"http://{token_registry}/token", ok
    assert TokenRegistry.asked[-1] == {"account": [USER], "client_id": ["orchestry"], "service": ["test-registry"]}
    refused = check_login(token_registry, USER, "wrong")
    assert (refused.outcome, refused.detail) == ("refused", "HTTP 401")


def test_nothing_listening_is_unreachable_and_a_web_server_is_no_registry() -> None:
    gone = check_login(f"127.0.0.1:{free_port()}", USER, PASSWORD)
    assert gone.outcome == "unreachable" and "http://" in gone.detail and "https://" in gone.detail, gone


def test_an_answer_without_a_challenge_is_unexpected() -> None:
    class NotARegistry(TokenRegistry):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), NotARegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = check_login(f"127.0.0.1:{server.server_address[1]}", USER, PASSWORD)
    finally:
        server.shutdown()
        server.server_close()
    assert (check.outcome, check.detail) == ("unexpected", "HTTP 404 without a registry's challenge")
