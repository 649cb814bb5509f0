"""The host sweep (swarm runtime, leader only): a host Orchestry drained because it was lost gets a
`host-activate` job once it is back.

"Back" is decided by `workflows/hosts.py` to_activate: Swarm reports the host ready, and Orchestry reaches it
itself (a TCP connection to Swarm's gossip port, which every node listens on and every manager must reach)
for ACTIVATE_AFTER_SECONDS without a break. Swarm's own "ready" is not enough: it keeps a partitioned host
ready for ~15-20 s, and Orchestry drains it within a few seconds of losing it. Only the lost-and-drained
hosts are probed, so a healthy swarm costs one request to the manager per sweep.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import Fence
from orchestry.operations.request import request_task
from orchestry.probe import Prober, ProberError, Target
from orchestry.runtime.types import EngineUnavailable, HostLister
from orchestry.workflows.hosts import GOSSIP_PORT, LOST, reachable_runs, to_activate

log = logging.getLogger("orchestry.hosts")
HOST_SWEEP_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 0.5


class HostSweep:
    def __init__(self, sessions: sessionmaker[Session], runtime: HostLister, prober: Prober) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.prober = prober
        self._reachable: dict[str, float] = {}  # address -> since when it has been reached without a break
        self._requested: dict[str, float] = {}  # host name -> when its activation was last requested

    def run(self, fence: Fence) -> list[str]:
        """One sweep; the hosts whose activation it requested."""
        try:
            nodes = self.runtime.nodes()
        except EngineUnavailable as exc:
            log.debug("host sweep skipped: the Swarm manager did not answer", extra={"error": str(exc)})
            return []
        lost = [n for n in nodes if n.view().drained_for == LOST and n.state == "ready"]
        reached: dict[str, bool] = {}
        if lost:
            targets = [
                Target(n.address, n.address, GOSSIP_PORT, "TCP", timeout_seconds=PROBE_TIMEOUT_SECONDS) for n in lost
            ]
            try:
                results = self.prober.check_all(targets)
            except ProberError as exc:
                log.warning("host sweep skipped: the prober failed", extra={"error": str(exc)})
                return []
            reached = {address: result.ok for address, result in results.items()}
        now = time.monotonic()
        self._reachable = reachable_runs(self._reachable, reached, now)
        due = [
            name
            for name in to_activate([n.view() for n in nodes], self._reachable, now)
            if now - self._requested.get(name, -60.0) >= 30.0  # once; again only if its job did not do it
        ]
        if not due:
            return []
        by_name = {n.name: n for n in nodes}
        fence.check()
        with self.sessions.begin() as session:
            for name in due:
                request_task(
                    session,
                    "host-activate",
                    lock=f"host:{by_name[name].address}",
                    args={"host": name, "began": time.time(), "why": "back after a loss"},
                    actor="hosts",
                )
        self._requested.update(dict.fromkeys(due, now))
        log.info("lost hosts are back: activating them", extra={"hosts": due})
        return due
