"""Bearer tokens: viewer reads, operator writes; once a token exists every request needs one."""

from __future__ import annotations

import subprocess
from pathlib import Path

from test_api import hello, post

from conftest import LiveServer, orchestry_cmd, start_server, stop_server


def create_token(live: LiveServer, name: str, role: str) -> str:
    out = live.cli("token", "create", name, "--role", role)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("orc_")
    return token


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_roles_and_missing_or_wrong_tokens(live: LiveServer) -> None:
    assert post(live, hello("open")).status_code == 201  # no token yet: open on loopback
    viewer = create_token(live, "ci-viewer", "viewer")
    operator = create_token(live, "deployer", "operator")

    resp = live.http.get("/api/v1/apps")
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert live.http.get("/api/v1/apps", headers=auth(viewer + "x")).status_code == 401
    assert live.http.get("/api/v1/apps", headers=auth("orc_nothing_here")).status_code == 401
    assert live.http.get("/api/v1/apps", headers={"Authorization": "Basic abc"}).status_code == 401
    assert live.http.get("/health").status_code == 200  # liveness stays public

    assert live.http.get("/api/v1/apps", headers=auth(viewer)).status_code == 200
    denied = live.http.post(
        "/api/v1/apps", content=hello("x"), headers={**auth(viewer), "Content-Type": "application/yaml"}
    )
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert live.http.delete("/api/v1/apps/open", headers=auth(viewer)).status_code == 403

    ok = live.http.post(
        "/api/v1/apps", content=hello("x"), headers={**auth(operator), "Content-Type": "application/yaml"}
    )
    assert ok.status_code == 201
    events = live.http.get("/api/v1/apps/x/events", headers=auth(viewer)).json()["events"]
    assert events[0]["actor"] == "token:deployer"

    # The CLI sends the token from ORCHESTRY_TOKEN (or --token).
    assert live.cli("list").returncode == 1
    listed = live.cli("list", env={"ORCHESTRY_TOKEN": viewer})
    assert listed.returncode == 0 and "open" in listed.stdout
    assert live.cli("--token", viewer, "list").returncode == 0

    names = live.cli("token", "list").stdout
    assert "ci-viewer" in names and "deployer" in names and viewer not in names
    assert live.cli("token", "create", "deployer").returncode == 1  # names are unique
    assert live.cli("token", "revoke", "deployer").returncode == 0
    assert live.http.get("/api/v1/apps", headers=auth(operator)).status_code == 401


def test_tokens_are_stored_hashed(live: LiveServer) -> None:
    token = create_token(live, "hashed", "operator")
    from sqlalchemy import text

    from orchestry.models.db import make_engine

    engine = make_engine(live.db_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id, secret_hash FROM api_tokens")).all()
    engine.dispose()
    secret = token.split("_", 2)[2]
    assert len(stored) == 1 and secret not in stored[0][1]


def test_serve_refuses_a_public_bind_without_a_token(db_url: str, tmp_path: Path) -> None:
    out = subprocess.run(
        orchestry_cmd("serve", "--host", "0.0.0.0", "--port", "1", "--database-url", db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "refusing to listen on 0.0.0.0 while no API token exists" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_binds_a_public_address_once_a_token_exists(db_url: str, tmp_path: Path) -> None:
    made = subprocess.run(
        orchestry_cmd("token", "create", "admin", "--database-url", db_url), capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    server = start_server(db_url, tmp_path, args=("--host", "0.0.0.0"))
    try:
        assert server.http.get("/api/v1/apps").status_code == 401
        assert server.http.get("/api/v1/apps", headers=auth(made.stdout.strip())).status_code == 200
    finally:
        stop_server(server)
