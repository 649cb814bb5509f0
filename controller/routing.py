"""Routing: compute the table from the database, push it to nginx, and remember what nginx serves.

This is the `Router` the jobs see. A push is idempotent: the table is stored with a generation that only
grows (across leaders too), nginx refuses an older one, and a change counts as applied only once nginx
reports serving its generation. Nothing here reloads nginx.

Every node's nginx serves the stored table too (controller/mirror.py), so what "nginx serves" means for a
drain is what every node reporting lately serves: until each has moved to the leader's generation, an
address counts as served while any table between theirs and the leader's holds it, and requests open to
it on any node count as in flight.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import TemporaryError
from orchestry.models.cluster import RouteReport, route_reports
from orchestry.models.routing import routed_apps, routing_state, stored_generation
from orchestry.nginx.manager import ControlledNginx, NginxError, StaleGeneration
from orchestry.nginx.routes import RouteTable, build_route_table
from orchestry.workflows.generations import next_generation, stale_push
from orchestry.workflows.routing import routing_table, still_served, wake_table

log = logging.getLogger("orchestry.routing")
KEEP_TABLES = 64
FRESH_SECONDS = 3.0  # a node whose nginx has not reported for this long no longer holds drains back


class NginxWriter:
    """The one writer of a node's nginx routing table: the leader's RouteSync and the node's RouteMirror both
    push through the node's writer (node.py makes one). Pushes go one at a time, and a table the other one
    pushed meanwhile is not pushed again: a change of routing is one push to each node's nginx."""

    def __init__(self, manager: ControlledNginx) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._pushed: int | None = None  # the generation this writer pushed last

    def push(self, table: RouteTable, *, replace: bool = False) -> int:
        """Make nginx serve `table` (see ControlledNginx.push_routes); returns the generation it serves."""
        with self._lock:
            if not replace and self._pushed == table.generation and self.manager.served_generation() == self._pushed:
                return table.generation  # pushed by the other caller between its read and this push
            served = self.manager.push_routes(table, replace=replace)
            self._pushed = served
            return served


class RouteSync:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        manager: ControlledNginx,
        node: str | None = None,
        writer: NginxWriter | None = None,
    ) -> None:
        self.sessions = sessions
        self.manager = manager
        self.writer = writer if writer is not None else NginxWriter(manager)
        self.node = node  # this node's name: its own reports are not its peers'
        self._lock = threading.Lock()
        self._served_generation = -1  # what this node's nginx confirmed last; -1: to be confirmed again
        self._tables: dict[int, dict[str, frozenset[str]]] = {}  # the recent generations pushed from here

    def sync(self) -> None:
        """Bring nginx to the table the database implies now; returns once nginx serves it."""
        with self._lock:
            replace = False
            for _ in range(3):
                with self.sessions.begin() as session:
                    state = routing_state(session)  # locked: one table per generation, whoever computes it
                    apps = routed_apps(session)
                    table, wake = routing_table(apps), wake_table(apps)
                    changed = table != state.routes or wake != (state.wake or {})
                    generation, restarted = next_generation(state.generation, changed)
                    if restarted:
                        log.warning(
                            "the stored routing generation was out of bounds; starting again from 1",
                            extra={"generation": state.generation},
                        )
                        state.served_generation = 0
                        self._tables.clear()
                        self._served_generation = -1
                        table_changed = True
                    else:
                        table_changed = generation != state.generation
                    if table_changed:
                        state.generation, state.routes, state.wake = generation, table, wake
                    generation, routes, wake = state.generation, dict(state.routes), dict(state.wake or {})
                if generation == self._served_generation:
                    return
                try:
                    served = self.writer.push(build_route_table(generation, routes, wake), replace=replace)
                except StaleGeneration as exc:
                    # Newer than this push: either the route mirror pushed a newer table of this database
                    # meanwhile, or a table this database never wrote (an older database beside this data
                    # directory, a hand-made PUT): that one is replaced, its generation never adopted.
                    with self.sessions() as session:
                        now_stored = stored_generation(session)
                    if stale_push(exc.served, now_stored) == "replace":
                        log.warning(
                            "nginx holds a table this database did not write; replacing it",
                            extra={"error": str(exc), "generation": generation},
                        )
                        replace = True
                    continue
                except NginxError as exc:
                    raise TemporaryError(f"nginx did not take the routing table: {exc}") from None
                with self.sessions.begin() as session:
                    state = routing_state(session)
                    state.served_generation = max(state.served_generation, served)
                self._served_generation = served
                self._tables[served] = {app: frozenset(addresses) for app, addresses in routes.items()}
                for old in sorted(self._tables)[:-KEEP_TABLES]:
                    del self._tables[old]
                return
            raise TemporaryError("nginx kept refusing the routing table as stale")

    def serving(self, app: str) -> frozenset[str] | None:
        """The app's addresses that some node's nginx may still send requests to (None: not known yet)."""
        generation = self._served_generation
        if generation not in self._tables:
            return None
        return still_served(app, self._tables, generation, [r.generation for r in self._peers()])

    def in_flight(self, address: str) -> int | None:
        """Requests open to `address` on this node's nginx and, as last reported, on every other node's."""
        local = self.manager.in_flight(address)
        if local is None:
            return None
        return local + sum(r.inflight.get(address, 0) for r in self._peers())

    def _peers(self) -> list[RouteReport]:
        if self.node is None:
            return []
        try:
            with self.sessions() as session:
                return route_reports(session, FRESH_SECONDS, exclude=self.node)
        except SQLAlchemyError:
            return []  # the job that asked fails on the database too, and retries

    def confirmed(self) -> bool:
        """Whether nginx still reports the generation last pushed (a restart or a wiped shared dict
        shows as another one, or none)."""
        return self._served_generation < 0 or self.manager.served_generation() == self._served_generation

    def forget(self) -> None:
        """After a leadership change or an nginx restart: what nginx serves must be confirmed again."""
        with self._lock:
            self._served_generation = -1
