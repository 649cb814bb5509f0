"""Every node's nginx serves the stored edge: host and path routes, certificates, ACME answers.

The edge has a version in the database (`edge_state`), bumped in the transaction of whatever changes it (a
registration, a deletion, a certificate, a challenge). The route mirror reads it with the routing table and
calls `sync` with it on each pass (every 0.25 s); only when the version moved, or nginx no longer reports
the version pushed (it restarted: the shared dict is empty), is the whole edge built and pushed. Private
keys are decrypted here, in memory, and travel only over the loopback control endpoint with the node's
control secret; they are never written to a file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from orchestry.config.secretbox import SecretBox, SecretKeyError
from orchestry.models.apps import current_specs
from orchestry.models.edge import challenge_answers, edge_version, usable_certificates
from orchestry.nginx.edge import EdgeCert, edge_body
from orchestry.nginx.manager import ControlledNginx, NginxError
from orchestry.workflows.public_routes import edge_rules

log = logging.getLogger("orchestry.edge")
CHECK_SECONDS = 1.0  # how often nginx's own version is asked for when the stored one did not move
RETRY_SECONDS = 5.0  # a version nginx refused (or did not answer) is tried again this often


def build_edge(session: Session, version: int, box: SecretBox | None) -> str:
    specs = current_specs(session)
    rules, off = edge_rules(specs)
    certs = []
    if box is not None:
        rows = usable_certificates(session)
        for row in rows:
            try:
                key = box.open(row.key_ciphertext or "")
            except SecretKeyError as exc:
                log.warning(
                    "a certificate's key cannot be decrypted", extra={"certificate": row.name, "error": str(exc)}
                )
                continue
            certs.append(EdgeCert(row.id, tuple(row.hosts), row.cert_pem or "", key, row.not_after))
    challenges = challenge_answers(session)
    return edge_body(version, rules, off, certs, challenges)


class EdgeSync:
    def __init__(
        self, sessions: sessionmaker[Session], manager: ControlledNginx, box: Callable[[], SecretBox] | None = None
    ) -> None:
        self.sessions = sessions
        self.manager = manager
        self.box = box
        self._pushed: int | None = None
        self._checked_at = -CHECK_SECONDS
        self._box_warned = False
        self._failed: tuple[int, float] | None = None  # (version, when) of the last push nginx refused

    def _open_box(self) -> SecretBox | None:
        if self.box is None:
            return None
        try:
            return self.box()
        except SecretKeyError as exc:
            if not self._box_warned:
                log.warning("certificates are not served: no secret key", extra={"error": str(exc)})
                self._box_warned = True
            return None

    def sync(self, version: int) -> int | None:
        """The stored edge (`version`: the stored version, read by the caller) served by this node's nginx;
        returns its version (raises NginxError, SQLAlchemyError: the caller's pass is skipped and tried
        again)."""
        now = time.monotonic()
        if version == self._pushed and now - self._checked_at < CHECK_SECONDS:
            return version
        self._checked_at = now
        if version == self._pushed and self.manager.edge_version() == version:
            return version
        if self._failed is not None and self._failed[0] == version and now - self._failed[1] < RETRY_SECONDS:
            return None  # this version was refused a moment ago: not rebuilt and resent on every pass
        with self.sessions() as session:
            version = edge_version(session)
            body = build_edge(session, version, self._open_box())
        try:
            self._pushed = self.manager.push_edge(body)
        except NginxError:
            self._failed = (version, now)
            raise
        self._failed = None
        log.info("edge pushed", extra={"version": self._pushed})
        return self._pushed
