"""Shared fakes for unit tests: what jobs and sweeps talk to, kept in memory and recorded.

The real engine is tested against Docker in test_runtime_docker.py; these stand in for it where a test is about
the code that decides, not the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from orchestry.nginx.routes import RouteTable
from orchestry.runtime.types import ContainerFailed, EngineUnavailable, ImageUnavailable, Observed, ReplicaRequest


class FakeRuntime:
    """Keeps containers in a dict and records every action."""

    def __init__(self) -> None:
        self.containers: dict[str, Observed] = {}
        self.actions: list[str] = []
        self.images = {"orchestry-testapp:latest"}
        self.fail_starts = False
        self.down = False
        self._n = 0

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        if self.down:
            raise EngineUnavailable("engine down")
        return [c for c in self.containers.values() if app is None or c.app == app]

    def ensure_image(self, image: str, auth: Any = None, on_pull: Any = None, on_progress: Any = None) -> None:
        if image not in self.images:
            raise ImageUnavailable(f"image {image} is not available locally and could not be pulled")

    def start_replica(self, req: ReplicaRequest) -> Observed:
        if self.fail_starts:
            raise ContainerFailed(f"{req.name} exited at once with code 1")
        self._n += 1
        obs = Observed(
            f"id{self._n}",
            req.name,
            req.app,
            req.slot,
            req.revision,
            req.spec_hash,
            "running",
            "127.0.0.1",
            30000 + self._n,
            datetime.now(UTC),
        )
        self.containers[req.name] = obs
        self.actions.append(f"start {req.name} r{req.revision}")
        return obs

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        self.containers.pop(name, None)
        self.actions.append(f"stop {name}")

    def logs(self, *a: Any) -> Iterator[Any]:
        return iter(())

    def events(self, *a: Any) -> Iterator[Any]:
        return iter(())

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        return []

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        return []


class RecordingNginx:
    """A node's nginx in memory: it serves the table pushed last and records every push's generation.

    `hold` set: the next push waits for `release` once it has begun (`pushing`), so a test can let another
    writer act in between; `read` is set on every `served_generation` (and `served_state`) call."""

    def __init__(self) -> None:
        self.pushes: list[int] = []
        self.served: int | None = None
        self.routes: dict[str, list[str]] = {}
        self.hold = threading.Event()
        self.pushing = threading.Event()
        self.release = threading.Event()
        self.read = threading.Event()

    def push_routes(self, table: RouteTable, *, replace: bool = False) -> int:
        if self.hold.is_set():
            self.hold.clear()
            self.pushing.set()
            assert self.release.wait(10), "the held push was never released"
        self.pushes.append(table.generation)
        self.served, self.routes = table.generation, {k: list(v) for k, v in table.apps.items()}
        return table.generation

    def served_generation(self) -> int | None:
        self.read.set()
        return self.served

    def served_state(self) -> tuple[int | None, dict[str, int]]:
        return self.served_generation(), self.in_flight_all()

    def confirm_routes(self, generation: int) -> bool:
        return generation == self.served

    def in_flight(self, address: str) -> int | None:
        return 0

    def in_flight_all(self) -> dict[str, int]:
        return {}

    def traffic_counters(self) -> dict[str, Any]:
        return {}

    def converge(self) -> bool:
        return False
