"""`tls: auto`: the leader's cert-sweep, which enqueues the `cert-issue` jobs (jobs/cert_issue.py).

- The `cert-sweep` (every CERT_SWEEP_SECONDS on the leader) enqueues one `cert-issue` job per host that a
  `tls: auto` route names and that has no valid certificate, or one expiring within RENEW_BEFORE (a renewal);
  a host whose last attempt failed waits a growing backoff first (rate limits: Let's Encrypt allows 5
  failed validations per host per hour). One job per host at a time (the job lock `cert:<host>`).
- The job obtains the certificate over ACME HTTP-01 (certbot's `acme` library); see jobs/cert_issue.py.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.apps import current_specs
from orchestry.models.base import utcnow
from orchestry.models.db import reads_of
from orchestry.models.edge import Certificate, certificates_named, edge_version
from orchestry.models.jobs import live_job
from orchestry.operations.request import request_task
from orchestry.workflows.certs import cert_due, failures_in
from orchestry.workflows.public_routes import edge_rules, tls_hosts

log = logging.getLogger("orchestry.acme")
CERT_SWEEP_SECONDS = 2.0


def due(row: Certificate | None, now: dt.datetime, failures: int = 0) -> bool:
    if row is None:
        return cert_due(None, None, None, now, failures)
    return cert_due(row.state, row.not_after, row.updated_at, now, failures)


class CertSweep:
    """The leader's cert-sweep. The `tls: auto` hosts are read from every app's spec in force, which change only
    with the edge's version (bumped by a registration, a rollback, a deletion): they are read again only when
    it moved, so a sweep of 1,000 apps without such routes is one small read, not 1,000 specs decoded."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.reads = reads_of(sessions)
        self._hosts: tuple[int, list[str]] | None = None  # (edge version, its tls: auto hosts, sorted)

    def hosts(self) -> list[str]:
        with self.reads() as session:
            version = edge_version(session)
            if self._hosts is None or self._hosts[0] != version:
                specs: dict[str, Any] = current_specs(session)
                self._hosts = (version, tls_hosts(edge_rules(specs)[0], "auto"))
        return self._hosts[1]

    def run(self) -> list[int]:
        """Enqueue `cert-issue` for every `tls: auto` host that is due. Returns the new jobs' ids."""
        hosts = self.hosts()
        if not hosts:
            return []
        ids: list[int] = []
        with self.sessions.begin() as session:
            rows = certificates_named(session, hosts)
            now = utcnow()
            for host in hosts:
                row = rows.get(host)
                if not due(row, now, failures_in(row.last_error) if row is not None else 0):
                    continue
                busy = live_job(session, f"cert:{host}")
                if busy is not None:
                    continue
                if row is None:
                    session.add(Certificate(name=host, hosts=[host], source="acme", state="pending"))
                elif row.state == "failed":
                    row.state = "pending"
                job = request_task(
                    session, "cert-issue", lock=f"cert:{host}", args={"host": host}, actor="cert-sweep", max_attempts=3
                )
                ids.append(job.job.id)
        return ids
