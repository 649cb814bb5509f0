"""Routes and certificates through a live `orchestry serve` (issue 13): a route registered is served by the
node's nginx without a reload, a conflict between apps is refused naming the other app, a certificate added
with `orchestry cert add` is served by SNI within a second, and its key never comes back."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from tlsutil import ThrowawayCA, served_certificate

from conftest import LiveServer, assert_error, hello, post, wait_for


def nginx_status(live: LiveServer) -> tuple[int, int]:
    """(master pid, configuration load number) of the node's nginx."""
    pid = int((Path(live.env["ORCHESTRY_DATA_DIR"]) / "nginx" / "logs" / "nginx.pid").read_text())
    control = f"http://127.0.0.1:{live.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/status"
    return pid, int(httpx.get(control, timeout=5, trust_env=False).json()["load"])


ROUTES = """routes:
  - {host: api.example.test, path: /v1, stripPrefix: true}
  - {host: www.example.test}
"""


def _handshake(port: int) -> bool:
    try:
        served_certificate(port, "any.test")
    except OSError:
        return False
    return True


@pytest.mark.usefixtures("testapp_image")
def test_a_route_registered_is_served_without_a_reload(live: LiveServer) -> None:
    assert post(live, hello("alpha")).status_code == 201
    job = live.wait_job(live.http.post("/api/v1/apps/alpha/up", json={"replicas": 1}).json()["job"]["id"])
    assert job["status"] == "succeeded", job
    proxy = httpx.Client(base_url=f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}", timeout=5, trust_env=False)
    wait_for(lambda: proxy.get("/", headers={"Host": "alpha.localhost"}).status_code == 200, 15)
    before = nginx_status(live)
    assert proxy.get("/v1/x", headers={"Host": "api.example.test"}).status_code == 404
    assert post(live, hello("alpha", extra=ROUTES)).status_code == 200  # a new revision with routes
    took = wait_for(lambda: proxy.get("/v1/x", headers={"Host": "api.example.test"}).status_code == 200, 15)
    stripped = proxy.get("/v1/items?q=1", headers={"Host": "api.example.test"})
    assert "path=/items?q=1" in stripped.text or "/items" in stripped.text, stripped.text
    assert proxy.get("/v10", headers={"Host": "api.example.test"}).status_code == 404  # not the prefix
    assert proxy.get("/", headers={"Host": "www.example.test"}).status_code == 200
    assert nginx_status(live) == before  # same master, same configuration load: no reload
    assert took < 10
    proxy.close()


def test_a_route_another_app_holds_is_refused_with_its_name(live: LiveServer) -> None:
    assert post(live, hello("alpha", extra=ROUTES)).status_code == 201
    clash = "routes:\n  - {host: API.example.test., path: /v1/}\n"
    body = assert_error(post(live, hello("beta", extra=clash)), 409, "route_conflict")
    assert body["fields"][0]["field"] == "routes[0].host"
    assert "alpha" in body["detail"] and body["fields"][0]["app"] == "alpha"
    assert live.http.get("/api/v1/apps/beta").status_code == 404  # nothing stored
    # Its default host: alpha.localhost is alpha's.
    taken = assert_error(post(live, hello("gamma", extra="routes:\n  - {host: alpha.localhost}\n")), 409)
    assert "alpha" in taken["detail"]
    # Another path on the same host is free.
    free = "routes:\n  - {host: api.example.test, path: /v2}\n"
    assert post(live, hello("beta", extra=free)).status_code == 201


def test_a_dry_run_reports_a_route_conflict_as_registering_would(live: LiveServer) -> None:
    assert post(live, hello("alpha", extra=ROUTES)).status_code == 201
    clash = hello("beta", extra="routes:\n  - {host: www.example.test}\n")
    body = assert_error(post(live, clash, dry_run="true"), 409, "route_conflict")
    assert body["fields"][0]["field"] == "routes[0].host" and body["fields"][0]["app"] == "alpha"
    assert "alpha" in body["detail"]
    assert live.http.get("/api/v1/apps/beta").status_code == 404
    cli = live.cli("register", "--dry-run", "-", stdin=clash.encode())
    assert cli.returncode != 0 and "alpha" in cli.stderr and "routes[0].host" in cli.stderr, cli
    free = post(live, hello("beta", extra="routes:\n  - {host: www.example.test, path: /b}\n"), dry_run="true")
    assert free.status_code == 200 and free.json()["results"][0]["action"] == "created"
    assert live.http.get("/api/v1/apps/beta").status_code == 404  # a dry run stores nothing


def test_cert_add_is_served_by_sni_within_a_second_and_its_key_never_returned(live: LiveServer, tmp_path: Path) -> None:
    port = int(live.env["ORCHESTRY_PROXY_TLS_PORT"])
    ca = ThrowawayCA()
    cert_pem, key_pem = ca.leaf("secure.example.test", "*.wild.example.test")
    (tmp_path / "c.pem").write_text(cert_pem + ca.pem)
    (tmp_path / "k.pem").write_text(key_pem)
    wait_for(lambda: _handshake(port), 15)  # the node's nginx is up
    out = live.cli("cert", "add", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem"))
    assert out.returncode == 0, out.stderr
    assert "secure.example.test" in out.stdout
    leaf = x509.load_pem_x509_certificate(cert_pem.encode())
    took = wait_for(lambda: served_certificate(port, "secure.example.test") == leaf, 5, step=0.02)
    assert took < 1.0  # from the CLI's answer to the first handshake that serves it
    assert served_certificate(port, "a.wild.example.test", ca.pem) == leaf  # verified, by the wildcard name
    listed = live.cli("certs")
    assert "secure.example.test" in listed.stdout and "custom" in listed.stdout
    for body in (
        out.stdout,
        listed.stdout,
        live.http.get("/api/v1/certs").text,
        json.dumps(live.http.get("/api/v1/events").json()),
    ):
        assert "PRIVATE KEY" not in body and key_pem.splitlines()[1] not in body
    bad = assert_error(live.http.post("/api/v1/certs", json={"cert": cert_pem, "key": ca.leaf("x.test")[1]}), 422)
    assert bad["fields"][0]["field"] == "key"
    assert_error(live.http.post("/api/v1/certs", json={"cert": "nope", "key": key_pem}), 422)
    assert live.http.delete("/api/v1/certs/secure.example.test").status_code == 204
    wait_for(lambda: served_certificate(port, "secure.example.test") != leaf, 5, step=0.02)
