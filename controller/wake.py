"""Every node hears its own nginx ask for wakes and writes them to the database at once.

One long-poll stays open to this node's nginx (`GET /_orchestry/wakes?after=SEQ`, answered the moment a
request for an app at zero is held there); each app it names is woken through `operations.wake.request_wake`
in a transaction of its own: a persisted, idempotent request the leader's dispatcher runs wherever it is
(why a long-poll rather than the route mirror's pass: workflows/wake.py). nginx records a wanted wake again
every second while requests stay held, so a write that failed here is retried then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.cluster import db_now
from orchestry.nginx.manager import ControlledNginx, NginxError
from orchestry.operations.wake import request_wake

log = logging.getLogger("orchestry.wake")

POLL_SECONDS = 5.0  # the long-poll's wait: nginx answers at once when a wake is recorded
RETRY_SECONDS = 1.0  # after nginx did not answer (down, restarting)


class WakeWatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        nginx: ControlledNginx,
        node: str,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessions = sessions
        self.nginx = nginx
        self.node = node
        self.wake = wake  # the local dispatcher's wake (the leader's, if this node leads)
        self._seq = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestry-wake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, join: float = POLL_SECONDS + 6) -> None:
        """Stop asking; wait up to `join` seconds for a long-poll in progress (ended at once by nginx's stop)."""
        self._stop.set()
        if join > 0 and self._thread.is_alive():
            self._thread.join(timeout=join)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(POLL_SECONDS)
            except NginxError as exc:
                log.debug("wake long-poll failed", extra={"error": str(exc).splitlines()[0]})
                self._stop.wait(RETRY_SECONDS)
            except Exception:  # never let the watcher die: held requests would wait for nothing
                log.exception("wake watcher pass failed")
                self._stop.wait(RETRY_SECONDS)

    def run_once(self, wait: float) -> list[int]:
        """One long-poll (up to `wait` seconds) and the wakes it names requested. Returns the jobs enqueued."""
        wanted = self.nginx.wanted_wakes(self._seq, wait)
        moved = wanted.seq != self._seq
        self._seq = wanted.seq
        if not moved or not wanted.apps:
            return []
        jobs = []
        for name, (held, waited) in sorted(wanted.apps.items()):
            try:
                with self.sessions.begin() as session:
                    job = request_wake(session, name, self.node, held, waited, db_now(session))
            except SQLAlchemyError as exc:  # asked again in a second while requests stay held
                log.warning("wake not recorded", extra={"app": name, "error": str(exc).splitlines()[0]})
                continue
            if job is not None:
                jobs.append(job)
                log.info("woken by a held request", extra={"app": name, "node": self.node, "held": held, "job": job})
        if jobs:
            self.wake()
        return jobs
