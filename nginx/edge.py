"""The edge nginx serves beside the routing table (pure): host and path routes, the apps without a default
route, TLS certificates by host, ACME HTTP-01 answers. Its JSON is the body of `PUT /_orchestry/edge`.

Certificates are chosen here, not in nginx: each host gets the certificate that covers it with the latest
expiry (a renewed one replaces the old at once); a wildcard certificate is keyed `*.example.com` and nginx
tries the exact name first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestry.nginx import validate
from orchestry.workflows.public_routes import RouteRule

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class EdgeCert:
    id: int
    hosts: tuple[str, ...]
    cert_pem: str
    key_pem: str
    not_after: datetime | None


def hosts_to_certs(certs: Sequence[EdgeCert]) -> dict[str, int]:
    """host -> the id of the certificate that nginx serves for it (the latest expiry; ties: the newest id)."""
    best: dict[str, EdgeCert] = {}
    for cert in certs:
        for host in cert.hosts:
            held = best.get(host)
            key = (cert.not_after.timestamp() if cert.not_after else 0.0, cert.id)
            if held is None or key > (held.not_after.timestamp() if held.not_after else 0.0, held.id):
                best[host] = cert
    return {host: cert.id for host, cert in sorted(best.items())}


def edge_body(
    version: int,
    rules: Sequence[RouteRule],
    off: Sequence[str],
    certs: Sequence[EdgeCert],
    challenges: Mapping[str, str],
) -> str:
    validate.generation(version)
    for name in off:
        validate.app_name(name)
    for rule in rules:
        validate.app_name(rule.app)
    chosen = hosts_to_certs(certs)
    used = set(chosen.values())
    for token in challenges:
        if not _TOKEN.fullmatch(token):
            raise ValueError(f"ACME token {token!r} is not base64url")
    return json.dumps(
        {
            "version": version,
            "rules": [r.to_json() for r in rules],
            "off": list(off),
            "certs": {str(c.id): {"cert": c.cert_pem, "key": c.key_pem} for c in certs if c.id in used},
            "hosts": {host: str(cid) for host, cid in chosen.items()},
            "challenges": dict(challenges),
        }
    )
