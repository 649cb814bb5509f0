"""Debian's pebble (Let's Encrypt's test ACME server) and pebble-challtestsrv (its DNS, answering 127.0.0.1
for every name) on free loopback ports, for the tests and benchmarks that issue certificates for real
(tests/test_acme_pebble.py, bench/tls). Pebble validates HTTP-01 against `http_port`: the proxy's."""

from __future__ import annotations

import contextlib
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

import httpx
from cryptography import x509

from orchestry.nginx.pem import self_signed
from orchestry.testapp.ports import free_port


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

        deadline = time.monotonic() + 15
        while not answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"pebble does not answer at {pebble.directory} after 15 s (logs in {directory})")
            time.sleep(0.05)
        yield pebble
    finally:
        for proc in (server, dns_server):
            proc.terminate()
            proc.wait(10)
        for log in logs:
            log.close()
