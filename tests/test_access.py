"""Access (issue 11): a non-loopback API never runs open, and a browser page cannot drive the API."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_api import hello, post
from test_auth import auth, create_token

from orchestry.workflows.access import is_loopback, no_token_refusal, same_origin, write_refusal

from conftest import LiveServer, assert_error, orchestry_cmd, snapshot, start_server, stop_server

# --- the decisions, as tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("api.localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://127.0.0.1:8000", "http", "127.0.0.1:8000", True),
        ("HTTP://LOCALHOST:8000", "http", "localhost:8000", True),
        ("http://example.com", "http", "example.com:80", True),
        ("https://example.com:443", "https", "example.com", True),
        ("http://[::1]:9000", "http", "[::1]:9000", True),
        ("http://127.0.0.1:8001", "http", "127.0.0.1:8000", False),
        ("https://127.0.0.1:8000", "http", "127.0.0.1:8000", False),
        ("http://evil.example", "http", "127.0.0.1:8000", False),
        ("null", "http", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8000/path", "http", "127.0.0.1:8000", False),
        ("http://127.0.0.1:99999", "http", "127.0.0.1:8000", False),
        ("", "http", "127.0.0.1:8000", False),
    ],
)
def test_same_origin(origin: str, scheme: str, host: str, same: bool) -> None:
    assert same_origin(origin, scheme, host) is same


OWN = "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    ("method", "origin", "site", "ctype", "body", "refused"),
    [
        # The CLI and curl: no Origin, no Sec-Fetch-Site.
        ("POST", None, None, "application/yaml", True, None),
        ("POST", None, None, "application/json", True, None),
        ("POST", None, None, "application/x-yaml; charset=utf-8", True, None),
        ("POST", None, None, "", False, None),  # `up` without a body
        ("DELETE", None, None, "", False, None),
        # What a page on another site can send without a preflight.
        ("POST", None, None, "text/plain", True, (415, "Content-Type")),
        ("POST", None, None, "text/plain;charset=UTF-8", True, (415, "Content-Type")),
        ("POST", None, None, "application/x-www-form-urlencoded", False, (415, "Content-Type")),
        ("POST", None, None, "multipart/form-data; boundary=x", True, (415, "Content-Type")),
        ("POST", None, None, "text/yaml", True, (415, "Content-Type")),
        ("POST", None, None, "", True, (415, "Content-Type")),  # a Blob without a type
        ("POST", "http://evil.example", None, "", False, (403, "Origin")),
        ("POST", "null", None, "application/json", True, (403, "Origin")),
        ("PUT", "http://127.0.0.1:8001", None, "application/json", True, (403, "Origin")),
        ("DELETE", "http://evil.example", "cross-site", "", False, (403, "Sec-Fetch-Site")),
        ("POST", None, "cross-site", "", False, (403, "Sec-Fetch-Site")),
        ("POST", None, "same-site", "application/json", True, (403, "Sec-Fetch-Site")),
        # The API's own origin, or typed in by the user.
        ("POST", OWN, "same-origin", "application/json", True, None),
        ("PATCH", OWN, "none", "application/json", True, None),
        # Reads are not writes (a browser cannot read another origin's answer without CORS).
        ("GET", "http://evil.example", "cross-site", "text/plain", False, None),
        ("HEAD", None, None, "application/x-www-form-urlencoded", False, None),
    ],
)
def test_write_refusal(
    method: str, origin: str | None, site: str | None, ctype: str, body: bool, refused: tuple[int, str] | None
) -> None:
    got = write_refusal(
        method, scheme="http", host="127.0.0.1:8000", origin=origin, fetch_site=site, media_type=ctype, has_body=body
    )
    assert (None if got is None else (got.status, got.field)) == refused


@pytest.mark.parametrize(
    ("public", "host", "refused"),
    [
        (True, "127.0.0.1:8000", (503, "no_api_token")),
        (True, "10.0.0.5:8000", (503, "no_api_token")),
        (False, "127.0.0.1:8000", None),
        (False, "localhost:8000", None),
        (False, "[::1]:8000", None),
        (False, "rebind.evil.example:8000", (403, "forbidden_host")),
        (False, "10.0.0.5:8000", (403, "forbidden_host")),
        (False, "", (403, "forbidden_host")),
    ],
)
def test_no_token_refusal(public: bool, host: str, refused: tuple[int, str] | None) -> None:
    got = no_token_refusal(public, host)
    assert (None if got is None else (got.status, got.error)) == refused


# --- the repros on a real controller ---------------------------------------------------------------------


def test_revoking_the_last_token_never_opens_a_public_node(db_url: str, tmp_path: Path) -> None:
    """Repro: `token create t`, `serve --host 0.0.0.0`, `token revoke t` -> anonymous POST .../scale got 202."""
    created = subprocess.run(
        orchestry_cmd("token", "create", "t", "--role", "operator", "--database-url", db_url),
        capture_output=True,
        text=True,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    server = start_server(db_url, tmp_path, args=("--host", "0.0.0.0"))
    try:
        yaml = {**auth(token), "Content-Type": "application/yaml"}
        assert server.http.post("/api/v1/apps", content=hello("web"), headers=yaml).status_code == 201
        refused = server.cli("token", "revoke", "t")
        assert refused.returncode == 1
        assert "refusing to revoke 't', the last API token" in refused.stderr
        assert f"node-{server.url.rsplit(':', 1)[1]}" in refused.stderr and "Traceback" not in refused.stderr
        assert server.http.get("/api/v1/apps", headers=auth(token)).status_code == 200  # still there
        assert server.http.get("/api/v1/apps").status_code == 401

        forced = server.cli("token", "revoke", "t", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "refuse every request until a token exists" in forced.stderr

        scaled = server.http.post("/api/v1/apps/web/scale", json={"replicas": 2})
        assert_error(scaled, 503, "no_api_token")
        assert "orchestry token create" in scaled.json()["detail"]
        assert_error(server.http.get("/api/v1/apps"), 503, "no_api_token")
        assert server.http.get("/health").status_code == 200  # liveness stays public

        again = create_token(server, "t2", "operator")
        assert server.http.get("/api/v1/apps").status_code == 401
        assert server.http.get("/api/v1/apps", headers=auth(again)).status_code == 200
    finally:
        stop_server(server)


def test_revoking_the_last_token_on_loopback_is_allowed(live: LiveServer) -> None:
    create_token(live, "only", "operator")
    out = live.cli("token", "revoke", "only")
    assert out.returncode == 0, out.stderr
    assert "the API is open (loopback only)" in out.stdout
    assert live.http.get("/api/v1/apps").status_code == 200


def test_a_browser_page_cannot_register_or_start_apps(live: LiveServer) -> None:
    """Repro: `Content-Type: text/plain` spec -> 201; form-encoded empty POST to /up, /down -> 202."""
    assert post(live, hello("web")).status_code == 201
    before = snapshot(live)

    assert_error(post(live, hello("evil"), "text/plain"), 415, "unsupported_media_type")
    assert_error(post(live, hello("evil"), "text/plain;charset=UTF-8"), 415, "unsupported_media_type")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = live.http.post("/api/v1/apps/web/up", headers=form)
    body = assert_error(resp, 415, "unsupported_media_type")
    assert body["fields"][0]["field"] == "Content-Type"
    assert_error(live.http.post("/api/v1/apps/web/down", headers=form), 415, "unsupported_media_type")
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    assert_error(live.http.post("/api/v1/apps/web/down", content=b"--x--\r\n", headers=multipart), 415)
    cross = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert_error(live.http.post("/api/v1/apps/web/up", headers=cross), 403, "cross_site")
    assert_error(live.http.post("/api/v1/apps/web/up", headers={"Origin": "http://evil.example"}), 403, "cross_site")
    assert_error(live.http.post("/api/v1/apps/web/up", headers={"Sec-Fetch-Site": "same-site"}), 403, "cross_site")
    assert_error(live.http.delete("/api/v1/apps/web", headers={"Origin": "null"}), 403, "cross_site")
    # DNS rebinding: the page's own name now points at 127.0.0.1, so its requests are "same-origin".
    rebound = {"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"}
    assert_error(live.http.get("/api/v1/apps", headers=rebound), 403, "forbidden_host")
    assert snapshot(live) == before

    # The API's own origin, and programs that send no Origin (the CLI), still work.
    own = {"Origin": live.url, "Sec-Fetch-Site": "same-origin"}
    assert live.http.post("/api/v1/apps/web/down", headers=own).status_code == 202
    assert live.http.get("/api/v1/apps", headers={"Host": "localhost"}).status_code == 200
    assert live.cli("list").returncode == 0
    spec = live.env["ORCHESTRY_DATA_DIR"] + "/cli-web.yaml"
    Path(spec).write_text(hello("cli-web"))
    registered = live.cli("register", spec)
    assert registered.returncode == 0, registered.stderr


def test_tokens_do_not_lift_the_browser_guards(live: LiveServer) -> None:
    operator = create_token(live, "op", "operator")
    resp = live.http.post("/api/v1/apps", content=hello("x"), headers={**auth(operator), "Content-Type": "text/plain"})
    assert_error(resp, 415, "unsupported_media_type")
    cross = {**auth(operator), "Origin": "http://evil.example"}
    assert_error(live.http.post("/api/v1/apps/x/up", headers=cross), 403, "cross_site")
    # With a token, any Host is fine (the token is the proof, not the address).
    assert live.http.get("/api/v1/apps", headers={**auth(operator), "Host": "orchestry.example"}).status_code == 200
