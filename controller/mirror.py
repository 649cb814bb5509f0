"""Every node routes: its nginx serves the routing table the leader stored, and it says so.

The leader computes the routing table and stores it with its generation (`routing_state`); this loop, on
every node, leader or not, keeps the node's own nginx running its rendered configuration and serving that
table, so any node is an entry point for app traffic and losing one (the leader included) loses no route.
Every second a follower's also reports its nginx's traffic counters: the leader's metrics add them to its own.
After each pass it reports in its `controller_nodes` row the generation its nginx confirmed and the
requests that nginx has open per replica address, read after the confirmation. The leader's drains wait for
those reports (controller/routing.py): a replica is stopped only once every node that reported lately
serves a table without it and has no request open to it.

A node whose reports stop (dead, or its nginx down) drops out of that wait after routing.FRESH_SECONDS.
Its nginx keeps routing the last table it had (as kube-proxy's rules outlive kube-proxy), but stops
calling itself ready: each pass that finds nginx serving the stored table confirms it to nginx (once a
second), and `/_orchestry/ready` on the proxy port answers 503 once no confirmation came for
`routes_stale_seconds`, so a load balancer in front of the nodes sends traffic to the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.controller.components import ComponentMonitor
from orchestry.controller.edge import EdgeSync
from orchestry.controller.routing import NginxWriter
from orchestry.models.cluster import report_routes, report_traffic
from orchestry.models.db import reads_of
from orchestry.models.edge import edge_version
from orchestry.models.routing import StoredRoutes, stored_generation, stored_routes
from orchestry.nginx.manager import ControlledNginx, NginxError, StaleGeneration
from orchestry.nginx.routes import build_route_table
from orchestry.workflows.generations import stale_push
from orchestry.workflows.routing import in_flight_outside

log = logging.getLogger("orchestry.mirror")

PERIOD_SECONDS = 0.25  # how stale a follower's table can be, about; one small read per pass
# The leader pushes its tables to its own nginx itself (RouteSync), reads its own nginx's open requests for its
# drains and its traffic counters for its metrics directly: its mirror only restarts nginx, confirms, reports
# what it serves and serves the edge (a new certificate within a second). Four passes a second there were
# ~14 % of an idle leader's CPU (issue 10).
LEADER_PERIOD_SECONDS = 0.5
CONVERGE_SECONDS = 5.0  # configuration check and restart of a dead nginx
TRAFFIC_SECONDS = 1.0  # how often the traffic counters are reported (the leader samples every metrics_seconds)
CONFIRM_SECONDS = 1.0  # how often nginx hears that its table is the stored one (its /_orchestry/ready)


class RouteMirror:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        manager: ControlledNginx,
        node: str,
        monitor: ComponentMonitor | None = None,
        writer: NginxWriter | None = None,
        edge: EdgeSync | None = None,
        leading: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sessions = sessions
        self.reads = reads_of(sessions)  # the stored table and edge are only read: no write lock on SQLite
        self.leading = leading  # this node leads: it pushes its own tables (see LEADER_PERIOD_SECONDS)
        self.monitor = monitor if monitor is not None else ComponentMonitor()
        self.manager = manager
        self.writer = writer if writer is not None else NginxWriter(manager)  # the node's, shared with RouteSync
        self.node = node
        self.edge = edge  # host routes, certificates, ACME answers (controller/edge.py)
        self._edge_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestry-mirror", daemon=True)
        self._converged_at = -CONVERGE_SECONDS
        self._counted_at = -TRAFFIC_SECONDS
        self._confirmed_at = -CONFIRM_SECONDS
        self._reported: tuple[int, dict[str, int]] | None = None
        self._table: StoredRoutes | None = None  # the stored table last read

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # never let the mirror die: this node would stop routing changes
                log.exception("route mirror pass failed")
            self._stop.wait(self.period())

    def period(self) -> float:
        """Seconds to the next pass: a follower polls the stored table; the leader wrote it and pushed it."""
        return LEADER_PERIOD_SECONDS if self.leading() else PERIOD_SECONDS

    def _push(self, generation: int, routes: dict[str, list[str]], wake: dict[str, Any] | None = None) -> int | None:
        """Push the stored table; when nginx holds a higher generation, keep it only if this database wrote
        it (the leader pushed a newer table to this nginx meanwhile), else replace it: a generation is never
        adopted from nginx (workflows/generations.py)."""
        try:
            return self.writer.push(build_route_table(generation, routes, wake))
        except StaleGeneration as exc:
            with self.reads() as session:
                now_stored = stored_generation(session)
            if stale_push(exc.served, now_stored) == "newer":
                return exc.served
        log.warning("nginx holds a table this database did not write; replacing it", extra={"generation": generation})
        return self.writer.push(build_route_table(generation, routes, wake), replace=True)

    def _sync_edge(self, version: int | None) -> None:
        """The edge (host routes, certificates, ACME answers; `version`: the stored one, read with the table)
        apart: a failure there never holds back the routing table's confirmation and reports. Logged when its
        message changes, not every pass."""
        if self.edge is None or version is None:
            return
        try:
            self.edge.sync(version)
            self._edge_error = None
        except (NginxError, SQLAlchemyError, ValueError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if message != self._edge_error:
                log.warning("the edge was not pushed to nginx", extra={"error": message})
            self._edge_error = message

    def _stored(self) -> tuple[StoredRoutes | None, int | None]:
        """The stored table and, with an edge to serve, the stored edge's version: one session a pass. The
        table's generation is read every pass, its routes only when the generation moved (a table is never
        changed under the same generation; hundreds of addresses are not decoded 4 times a second for
        nothing)."""
        with self.reads() as session:
            generation = stored_generation(session)
            if generation == 0:
                self._table = None
            elif self._table is None or self._table.generation != generation:
                self._table = stored_routes(session)
            edge = edge_version(session) if self.edge is not None else None
        return self._table, edge

    def run_once(self) -> int | None:
        """One pass: nginx up, the stored table served, the report written. Returns the generation served.
        Idle, a pass is one read of the database and one call to nginx (plus, once a second, the confirmation,
        the traffic counters and the edge's version)."""
        now = time.monotonic()
        if now - self._converged_at >= CONVERGE_SECONDS:
            self._converged_at = now
            try:
                self.manager.converge()
            except NginxError as exc:  # logged when it goes down, then once a minute: not every pass
                self.monitor.report("nginx", False, f"not running its configuration: {exc}")
                return None
            self.monitor.report("nginx", True)
        try:
            stored, edge = self._stored()
            # One call: the generation served and the requests open, read at one moment, so they go together
            # (once a table is served, no request picks a replica it left out).
            served, open_requests = self.manager.served_state()
            if stored is not None and stored.generation > 0 and served != stored.generation:
                self._push(stored.generation, dict(stored.routes), dict(stored.wake))
                served, open_requests = self.manager.served_state()
            self._sync_edge(edge)
            if served is None:
                return None
            table = dict(stored.routes) if stored is not None and served == stored.generation else None
            due = table is not None and time.monotonic() - self._confirmed_at >= CONFIRM_SECONDS
            if due and self.manager.confirm_routes(served):  # the table was read from the database in this pass
                self._confirmed_at = time.monotonic()
            inflight = in_flight_outside(open_requests, table)
            counters = None
            # Not on the leader: its metrics read its own nginx's counters directly, only the others' reports.
            if not self.leading() and time.monotonic() - self._counted_at >= TRAFFIC_SECONDS:
                self._counted_at = time.monotonic()
                counters = self.manager.traffic_counters()
            report = (served, inflight)
            if report != self._reported or counters is not None:  # else nothing new: no write (traffic: 1/s)
                with self.sessions.begin() as session:
                    report_routes(session, self.node, served, inflight)
                    if counters is not None:
                        report_traffic(session, self.node, counters)
                self._reported = report
            return served
        except (NginxError, SQLAlchemyError) as exc:
            log.debug("route mirror pass skipped", extra={"error": str(exc).splitlines()[0]})
            return None
