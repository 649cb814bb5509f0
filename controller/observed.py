"""The runtime as the leader sees it: Docker's list, corrected by Docker's own `die` events.

Measured here: for some 100 ms after a container's `die` event, Docker's list can still report it as
running. A reconcile woken by that event would then see nothing to repair. The event is the truth, so a
container whose death was announced counts as exited from then on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from orchestry.runtime.types import (
    ContainerFailed,
    EngineEvent,
    HostLister,
    LogLine,
    NodeInfo,
    Observed,
    PullSummary,
    PullUpdate,
    RegistryAuth,
    ReplicaRequest,
    Runtime,
)

MEMORY_SECONDS = 60.0


class EventAwareRuntime:
    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self._died: dict[str, float] = {}
        self._lock = threading.Lock()

    def saw(self, event: EngineEvent) -> None:
        if event.action in ("die", "oom"):
            now = time.monotonic()
            with self._lock:
                self._died = {cid: t for cid, t in self._died.items() if now - t < MEMORY_SECONDS}
                self._died[event.container_id] = now

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        observed = self.inner.list_replicas(cluster, app)
        with self._lock:
            died = set(self._died)
        return [dataclasses.replace(o, state="exited") if o.running and o.id in died else o for o in observed]

    def ensure_image(
        self,
        image: str,
        auth: RegistryAuth | None = None,
        on_pull: Callable[[], None] | None = None,
        on_progress: Callable[[PullUpdate], None] | None = None,
    ) -> PullSummary | None:
        return self.inner.ensure_image(image, auth, on_pull, on_progress)

    def start_replica(self, req: ReplicaRequest) -> Observed:
        return self.inner.start_replica(req)

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        self.inner.stop_replica(cluster, name, grace_seconds)

    def logs(self, cluster: str, app: str, lines: int, follow: bool) -> Iterator[LogLine]:
        return self.inner.logs(cluster, app, lines, follow)

    def events(self, cluster: str, since: datetime | None) -> Iterator[EngineEvent]:
        return self.inner.events(cluster, since)

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        return self.inner.list_volumes(cluster, app)

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        return self.inner.remove_volumes(cluster, app)

    def nodes(self) -> list[NodeInfo]:
        if not isinstance(self.inner, HostLister):
            return []
        return self.inner.nodes()

    def drain_host(self, address: str) -> NodeInfo | None:
        if not isinstance(self.inner, HostLister):
            return None
        return self.inner.drain_host(address)

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        if not isinstance(self.inner, HostLister):
            raise ContainerFailed("this runtime has one host: there is no host to drain or activate")
        return self.inner.set_availability(name, availability, drained_for)

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        return self.inner.stale_tasks(cluster, node_id) if isinstance(self.inner, HostLister) else []
