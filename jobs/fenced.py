"""The runtime as a job sees it: every action checks the fence right before it starts, and is logged with
the node and term that took it.

The check is the last moment before Docker is asked, in whichever thread asks (parallel starts included), so
a leader whose fence ran out while it waited for a lock or for another replica acts on nothing more. The
log line (`runtime action`, with node, term, job, action, target, and the wall-clock time it began) lets an
audit compare every action with each term's validity (bench/chaos does: actions outside their term).
Reads (list, logs, events) are neither fenced nor logged: they change nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

from orchestry.jobs.base import Fence
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

log = logging.getLogger("orchestry.runtime.actions")
T = TypeVar("T")


class FencedRuntime:
    def __init__(self, inner: Runtime, fence: Fence, job_id: int) -> None:
        self.inner = inner
        self.fence = fence
        self.job_id = job_id

    def _act(self, action: str, target: str, call: Callable[[], T]) -> T:
        self.fence.check()
        fields = {"node": self.fence.node, "term": self.fence.term, "job_id": self.job_id, "action": action}
        began = time.time()
        log.info("runtime action", extra={**fields, "target": target, "began": round(began, 3)})
        try:
            result = call()
        except Exception as exc:
            log.info(
                "runtime action failed",
                extra={**fields, "target": target, "began": round(began, 3), "error": str(exc)[:200]},
            )
            raise
        container = result.id[:12] if isinstance(result, Observed) else None
        log.info(
            "runtime action done",
            extra={**fields, "target": target, "began": round(began, 3), "ended": round(time.time(), 3)}
            | ({"container": container} if container else {}),
        )
        return result

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        return self.inner.list_replicas(cluster, app)

    def ensure_image(
        self,
        image: str,
        auth: RegistryAuth | None = None,
        on_pull: Callable[[], None] | None = None,
        on_progress: Callable[[PullUpdate], None] | None = None,
    ) -> PullSummary | None:
        return self.inner.ensure_image(
            image, auth, on_pull, on_progress
        )  # present already, or a pull: no container changes

    def start_replica(self, req: ReplicaRequest) -> Observed:
        return self._act("start", req.name, lambda: self.inner.start_replica(req))

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        self._act("stop", name, lambda: self.inner.stop_replica(cluster, name, grace_seconds))

    def logs(self, cluster: str, app: str, lines: int, follow: bool) -> Iterator[LogLine]:
        return self.inner.logs(cluster, app, lines, follow)

    def events(self, cluster: str, since: datetime | None) -> Iterator[EngineEvent]:
        return self.inner.events(cluster, since)

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        return self.inner.list_volumes(cluster, app)

    def drain_host(self, address: str) -> NodeInfo | None:
        inner = self.inner
        if not isinstance(inner, HostLister):
            raise ContainerFailed("this runtime has one host: there is no host to drain")
        return self._act("drain host", address, lambda: inner.drain_host(address))

    def nodes(self) -> list[NodeInfo]:
        """The hosts (a read: not fenced); [] on a runtime with one host."""
        inner = self.inner
        return inner.nodes() if isinstance(inner, HostLister) else []

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        inner = self.inner
        if not isinstance(inner, HostLister):
            raise ContainerFailed("this runtime has one host: there is no host to drain or activate")
        return self._act(f"host {availability}", name, lambda: inner.set_availability(name, availability, drained_for))

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        inner = self.inner
        return inner.stale_tasks(cluster, node_id) if isinstance(inner, HostLister) else []

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        return self._act("remove volumes", app, lambda: self.inner.remove_volumes(cluster, app))
