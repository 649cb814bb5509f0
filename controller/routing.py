"""Routing: compute the table from the database, push it to nginx, and remember what nginx serves.

This is the `Router` the jobs see. A push is idempotent: the table is stored with a generation that only
grows (across leaders too), nginx refuses an older one, and a change counts as applied only once nginx
reports serving its generation. Nothing here reloads nginx.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from orchestry.jobs.base import TemporaryError
from orchestry.models.routing import routed_apps, routing_state
from orchestry.nginx.manager import NginxError, NginxManager, StaleGeneration
from orchestry.nginx.routes import build_route_table
from orchestry.workflows.routing import routing_table

log = logging.getLogger("orchestry.routing")


class RouteSync:
    def __init__(self, sessions: sessionmaker[Session], manager: NginxManager) -> None:
        self.sessions = sessions
        self.manager = manager
        self._lock = threading.Lock()
        self._served: dict[str, frozenset[str]] | None = None
        self._served_generation = -1

    def sync(self) -> None:
        """Bring nginx to the table the database implies now; returns once nginx serves it."""
        with self._lock:
            for _ in range(3):
                with self.sessions.begin() as session:
                    state = routing_state(session)  # locked: one table per generation, whoever computes it
                    table = routing_table(routed_apps(session))
                    if table != state.routes or state.generation == 0:
                        state.generation += 1
                        state.routes = table
                    generation, routes = state.generation, dict(state.routes)
                if generation == self._served_generation:
                    return
                try:
                    served = self.manager.push_routes(build_route_table(generation, routes))
                except StaleGeneration as exc:
                    # nginx (or its routes file) holds a newer generation than the database: a database
                    # restored from a backup, or a fresh one beside an old data directory. Jump past it.
                    log.warning("nginx holds a newer table; pushing past it", extra={"error": str(exc)})
                    self._bump_past(max(exc.served or 0, self.manager.routes_file_generation() or 0))
                    continue
                except NginxError as exc:
                    raise TemporaryError(f"nginx did not take the routing table: {exc}") from None
                with self.sessions.begin() as session:
                    state = routing_state(session)
                    state.served_generation = max(state.served_generation, served)
                self._served = {app: frozenset(addresses) for app, addresses in routes.items()}
                self._served_generation = served
                return
            raise TemporaryError("nginx kept refusing the routing table as stale")

    def _bump_past(self, generation: int) -> None:
        with self.sessions.begin() as session:
            state = routing_state(session)
            state.generation = max(state.generation, generation)
            state.routes = {"": []}  # differs from any real table: the next round takes a new generation

    def serving(self, app: str) -> frozenset[str] | None:
        served = self._served
        if served is None:
            return None
        return served.get(app, frozenset())

    def in_flight(self, address: str) -> int | None:
        return self.manager.in_flight(address) if hasattr(self.manager, "in_flight") else None

    def confirmed(self) -> bool:
        """Whether nginx still reports the generation last pushed (a restart or a wiped shared dict
        shows as another one, or none)."""
        return self._served_generation < 0 or self.manager.served_generation() == self._served_generation

    def forget(self) -> None:
        """After a leadership change or an nginx restart: what nginx serves must be confirmed again."""
        with self._lock:
            self._served = None
            self._served_generation = -1
