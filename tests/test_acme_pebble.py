"""`tls: auto` end to end against a real ACME server: Debian's pebble (Let's Encrypt's test CA) validates
HTTP-01 against Orchestry's own nginx, names resolved by pebble-challtestsrv to 127.0.0.1; the certificate
issued is served by SNI and verifies against pebble's roots (issue 13)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from tlsutil import served_certificate

from orchestry.nginx.pem import self_signed
from orchestry.testapp.ports import free_port

from conftest import LiveServer, hello, start_server, stop_server, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image", "nginx_required")


@dataclass
class Pebble:
    directory: str
    ca_file: Path  # pebble's own HTTPS certificate (the ACME client trusts it)
    management: str
    dns_management: str

    def resolve(self, host: str, address: str) -> None:
        """pebble-challtestsrv answers `address` for `host` (every other name: 127.0.0.1)."""
        body = {"host": host, "addresses": [address]}
        assert httpx.post(f"{self.dns_management}/add-a", json=body, timeout=5, trust_env=False).status_code == 200

    def roots(self) -> str:
        """The chain's root and intermediate, to verify what nginx serves."""
        get = httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca_file)), timeout=5, trust_env=False)
        with get:
            return get.get(f"{self.management}/roots/0").text + get.get(f"{self.management}/intermediates/0").text


def _self_signed(directory: Path) -> tuple[Path, Path]:
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert_pem, key_pem = self_signed("pebble", 2, names)
    cert_path, key_path = directory / "pebble.crt", directory / "pebble.key"
    cert_path.write_text(cert_pem)
    key_path.write_text(key_pem)
    return cert_path, key_path


@contextlib.contextmanager
def start_pebble(directory: Path, http_port: int, validity_seconds: int | None = None) -> Iterator[Pebble]:
    assert shutil.which("pebble") and shutil.which("pebble-challtestsrv"), "Debian's pebble package is missing"
    cert, key = _self_signed(directory)
    acme, management, dns, dns_management = free_port(), free_port(), free_port(), free_port()
    config = directory / "pebble.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
                }
            }
        )
    )
    logs = [open(directory / name, "wb") for name in ("challtestsrv.log", "pebble.log")]  # noqa: SIM115
    dns_server = subprocess.Popen(
        ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01", f"127.0.0.1:{dns}",
         "-http01", "", "-https01", "", "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}"],
        stdout=logs[0], stderr=subprocess.STDOUT,
    )  # fmt: skip
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    server = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"],
        stdout=logs[1], stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    pebble = Pebble(
        f"https://127.0.0.1:{acme}/dir", cert, f"https://127.0.0.1:{management}", f"http://127.0.0.1:{dns_management}"
    )
    try:

        def answers() -> bool:
            try:
                return (
                    httpx.get(
                        pebble.directory,
                        verify=ssl.create_default_context(cafile=str(cert)),
                        timeout=1,
                        trust_env=False,
                    ).status_code
                    == 200
                )
            except httpx.HTTPError:
                return False

        wait_for(answers, 15)
        yield pebble
    finally:
        for proc in (server, dns_server):
            proc.terminate()
            proc.wait(10)
        for log in logs:
            log.close()


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
