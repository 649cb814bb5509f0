"""`tls: auto` end to end against a real ACME server: Debian's pebble (Let's Encrypt's test CA) validates
HTTP-01 against Orchestry's own nginx, names resolved by pebble-challtestsrv to 127.0.0.1; the certificate
issued is served by SNI and verifies against pebble's roots (issue 13)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tlsutil import served_certificate

from orchestry.testapp.pebble import Pebble, start_pebble
from orchestry.testapp.ports import free_port

from conftest import LiveServer, hello, start_server, stop_server, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image", "nginx_required")


AUTO = """routes:
  - {host: auto.example.test, tls: auto, redirectHttp: true}
"""


@contextlib.contextmanager
def acme_node(db_url: str, tmp_path: Path, validity_seconds: int | None = None) -> Iterator[tuple[LiveServer, Pebble]]:
    """A live `orchestry serve` whose ACME directory is a fresh pebble validating against its nginx."""
    proxy, tls = free_port(), free_port()
    with start_pebble(tmp_path, proxy, validity_seconds) as pebble:
        (tmp_path / "serve").mkdir()
        env = {
            "ORCHESTRY_PROXY_PORT": str(proxy),
            "ORCHESTRY_PROXY_TLS_PORT": str(tls),
            "ORCHESTRY_ACME_DIRECTORY_URL": pebble.directory,
            "ORCHESTRY_ACME_CA_FILE": str(pebble.ca_file),
            "ORCHESTRY_ACME_EMAIL": "ops@example.test",
        }
        server = start_server(db_url, tmp_path / "serve", extra_env=env)
        try:
            yield server, pebble
        finally:
            stop_server(server)


def register(server: LiveServer, name: str, routes: str) -> None:
    registered = server.http.post(
        "/api/v1/apps", content=hello(name, extra=routes), headers={"Content-Type": "application/yaml"}
    )
    assert registered.status_code == 201, registered.text


def events(server: LiveServer) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = server.http.get("/api/v1/events", params={"type": "cert"}).json()["events"]
    return result


def test_tls_auto_issues_a_certificate_over_http01_and_serves_it(db_url: str, tmp_path: Path) -> None:
    with acme_node(db_url, tmp_path) as (server, pebble):
        tls, proxy = int(server.env["ORCHESTRY_PROXY_TLS_PORT"]), int(server.env["ORCHESTRY_PROXY_PORT"])
        started = time.monotonic()
        register(server, "auto", AUTO)
        up = server.http.post("/api/v1/apps/auto/up", json={"replicas": 1}).json()["job"]["id"]
        assert server.wait_job(up)["status"] == "succeeded"
        roots = pebble.roots()

        def https_ok() -> bool:
            try:
                served_certificate(tls, "auto.example.test", roots)  # verified against pebble's chain
            except OSError:
                return False
            with httpx.Client(verify=False, timeout=5, trust_env=False) as c:
                response = c.get(
                    f"https://127.0.0.1:{tls}/", headers={"Host": "auto.example.test"},
                    extensions={"sni_hostname": "auto.example.test"},
                )  # fmt: skip
            return response.status_code == 200

        wait_for(https_ok, 90, step=0.2)
        first_https = time.monotonic() - started
        served = served_certificate(tls, "auto.example.test", roots)
        assert served.issuer != served.subject
        certs = server.http.get("/api/v1/certs").json()["certs"]
        assert [(c["name"], c["source"], c["state"]) for c in certs] == [("auto.example.test", "acme", "valid")]
        assert "cert.issued" in {e["type"] for e in events(server)}
        jobs = server.http.get("/api/v1/jobs").json()["jobs"]
        assert any(j["kind"] == "cert-issue" and j["status"] == "succeeded" for j in jobs)
        redirect = httpx.get(f"http://127.0.0.1:{proxy}/p", headers={"Host": "auto.example.test"}, trust_env=False)
        assert (redirect.status_code, redirect.headers["location"]) == (301, f"https://auto.example.test:{tls}/p")
        print(f"register -> first HTTPS 200: {first_https:.1f} s")


def test_a_certificate_due_is_renewed_and_the_new_one_served(db_url: str, tmp_path: Path) -> None:
    """Pebble issues for 29 days: inside the 30-day renewal window at once, so the sweep renews it."""
    with acme_node(db_url, tmp_path, validity_seconds=29 * 86400) as (server, pebble):
        tls = int(server.env["ORCHESTRY_PROXY_TLS_PORT"])
        register(server, "auto", AUTO)
        wait_for(lambda: "cert.renewed" in {e["type"] for e in events(server)}, 90, step=0.2)
        roots = pebble.roots()

        def serves_the_stored_one() -> bool:
            # Renewals go on (each new certificate is due at once): what nginx serves is the one the database
            # holds or one renewed a moment before it (a minute of slack on `not_after`); nginx gets each new
            # certificate within a second, so a few reads suffice.
            stored = server.http.get("/api/v1/certs/auto.example.test").json()
            served = served_certificate(tls, "auto.example.test", roots)
            stored_after = dt.datetime.fromisoformat(stored["not_after"]).timestamp()
            return served.not_valid_after_utc.timestamp() >= stored_after - 60

        wait_for(serves_the_stored_one, 10, step=0.5)


def test_a_failing_challenge_ends_as_a_failed_job_with_the_reason(db_url: str, tmp_path: Path) -> None:
    with acme_node(db_url, tmp_path) as (server, pebble):
        pebble.resolve("fail.example.test", "127.0.0.2")  # nothing listens there: validation cannot connect
        register(server, "fail", "routes:\n  - {host: fail.example.test, tls: auto}\n")

        def failed() -> dict[str, Any] | None:
            jobs = server.http.get("/api/v1/jobs", params={"status": "failed"}).json()["jobs"]
            return next((j for j in jobs if j["kind"] == "cert-issue"), None)

        wait_for(failed, 90, step=0.2)
        job = failed()
        assert job is not None and "fail.example.test" in job["error"]
        assert "127.0.0.2" in job["error"] or "connect" in job["error"].lower(), job["error"]
        cert = server.http.get("/api/v1/certs/fail.example.test").json()
        assert cert["state"] == "failed" and cert["last_error"]
        assert "cert.failed" in {e["type"] for e in events(server)}
        time.sleep(3)  # two sweeps: a failed host backs off (no new job within the first minute)
        jobs = server.http.get("/api/v1/jobs").json()["jobs"]
        assert sum(j["kind"] == "cert-issue" for j in jobs) == 1
