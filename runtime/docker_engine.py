"""The Docker implementation of `Runtime`: the only module of Orchestry that imports the Docker SDK.

Design notes:
- Every call goes through `_engine(...)`, which turns the SDK's many exceptions into the runtime's three: an
  engine that does not answer (connection refused, timeout, 5xx) is `EngineUnavailable`, so that callers never
  mistake a failed observation for an empty one; a refusal (4xx) is `ContainerFailed`.
- Listing uses the low-level `/containers/json` summaries with label filters: one request, no inspect per
  container. The container port travels as a label (`LABEL_PORT`) because the summary only lists bindings.
  `started_at` there is the creation time in whole seconds: Orchestry starts a container right after creating
  it and never restarts it (restart policy "no"), so the two differ by milliseconds, but the truncation can
  make it up to a second early; the health check's initial delay counts from it. The engine therefore keeps
  the inspected start time (to the nanosecond) of every container it started and lists that instead.
- A command that exits at once is only visible after the engine has processed the exit (~100 ms here, while
  inspect still says "running"), so `start_replica` watches a fresh container for `settle` seconds. Later crashes
  are for the reconcile loop and the health checks to find.
- Follow-mode logs and events are iterators with a thread-safe `close()` that shuts the HTTP stream down, so
  another thread can stop a reader blocked on a quiet stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests

from orchestry.runtime.common import label_int, owned, replica_from_labels, replica_labels
from orchestry.runtime.stats import STATS_CONCURRENCY, ContainerFacts
from orchestry.runtime.types import (
    LABEL_APP,
    LABEL_CLUSTER,
    LABEL_INSTALLATION,
    LABEL_PORT,
    LABEL_SPEC_HASH,
    LABEL_VOLUME,
    ContainerFailed,
    EngineEvent,
    EngineUnavailable,
    ImageUnavailable,
    LogLine,
    Observed,
    PullSummary,
    PullUpdate,
    RegistryAuth,
    ReplicaRequest,
    RuntimeFailure,
    VolumeConflict,
)
from orchestry.workflows.metrics import Usage
from orchestry.workflows.registry import pull_failure

LOOPBACK = "127.0.0.1"
POLL_SECONDS = 0.05
CONCURRENT_START_SECONDS = 2.0  # how long to wait for a racing start_replica to start its container
FAILED_LOG_LINES = 10
STARTED_KEPT = 4096  # start times remembered (the oldest go first): far more than one engine's replicas
_EXITED = re.compile(r"Exited \((-?\d+)\)")
# What a broken connection to the engine raises, besides APIError (requests' exceptions are OSErrors).
_TRANSPORT_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


class DockerEngine:
    """`Runtime` on a local Docker engine. Thread-safe: one instance serves every job worker."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        timeout: float = 30,
        *,
        settle: float = 0.25,
        installation: str | None = None,
        base_url: str | None = None,
    ) -> None:
        self._client = client
        self._base_url = base_url  # None: DOCKER_HOST, else the local engine
        # Stamped on what this engine creates; with it, another installation's containers are never seen.
        self.installation = installation
        self._timeout = timeout
        self._settle = settle
        self._lock = threading.Lock()
        self._started: dict[str, datetime] = {}  # container id -> StartedAt of the containers this engine started

    # -- plumbing -------------------------------------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        """The client, created on first use (and again after a failed attempt) so a down engine at boot heals."""
        with self._lock:
            if self._client is None:
                with _engine("connect to the Docker engine"):
                    # A pool as large as the metrics fallback's concurrency (runtime/stats.py: one stats call
                    # per replica at once); the SDK's default of 10 would open and drop connections beyond it.
                    self._client = connect(self._base_url, self._timeout, max_pool_size=STATS_CONCURRENCY)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _inspect(self, name_or_id: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self._docker().api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None
        return attrs

    def _remove(self, container_id: str) -> None:
        """Force-remove; a container already gone or already being removed counts as removed."""
        try:
            self._docker().api.remove_container(container_id, force=True, v=False)
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):
                raise

    # -- Runtime ----------------------------------------------------------------------------------------------

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        labels = [f"{LABEL_CLUSTER}={cluster}"] + ([f"{LABEL_APP}={app}"] if app is not None else [])
        with _engine(f"list the containers of cluster {cluster}"):
            summaries = self._docker().api.containers(all=True, filters={"label": labels})
        summaries = [s for s in summaries if self._ours(s.get("Labels") or {})]
        with self._lock:  # the start times this engine saw to the nanosecond, over the list's whole seconds
            observed = [_precise(_from_summary(summary), self._started) for summary in summaries]
        return sorted(observed, key=lambda o: (o.app, o.slot, o.name))

    def foreign_containers(self, cluster: str) -> list[str]:
        """Names of the containers that carry this cluster name but another installation's id."""
        with _engine(f"list the containers of cluster {cluster}"):
            summaries = self._docker().api.containers(all=True, filters={"label": [f"{LABEL_CLUSTER}={cluster}"]})
        return sorted(
            (s.get("Names") or ["?"])[0].lstrip("/") for s in summaries if not self._ours(s.get("Labels") or {})
        )

    def _check_owned(self, attrs: dict[str, Any], cluster: str, message: str) -> None:
        labels = _labels(attrs)
        if labels.get(LABEL_CLUSTER) != cluster:
            raise ContainerFailed(message)
        if not self._ours(labels):
            raise ContainerFailed(f"{message} (it belongs to installation {labels.get(LABEL_INSTALLATION)})")

    def _ours(self, labels: dict[str, str]) -> bool:
        return owned(labels, self.installation)

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        labels = [f"{LABEL_CLUSTER}={cluster}", f"{LABEL_APP}={app}"]
        with _engine(f"list the volumes of {app}"):
            found = self._docker().api.volumes(filters={"label": labels}).get("Volumes") or []
        return sorted(v["Name"] for v in found if self._ours(v.get("Labels") or {}))

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        removed = []
        for name in self.list_volumes(cluster, app):
            with _engine(f"remove volume {name}"):
                try:
                    self._docker().api.remove_volume(name)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    if exc.status_code == 409:
                        raise VolumeConflict(f"volume {name} is still in use: {_one_line(exc)}") from None
                    raise
            removed.append(name)
        return removed

    def _ensure_volumes(self, req: ReplicaRequest) -> None:
        """Create the app's volumes with our labels; refuse one whose name another app or installation holds."""
        api = self._docker().api
        for name, _ in req.volumes:
            labels = {LABEL_CLUSTER: req.cluster, LABEL_APP: req.app, LABEL_VOLUME: name.split("_", 2)[-1]}
            if self.installation is not None:
                labels[LABEL_INSTALLATION] = self.installation
            try:
                found: dict[str, Any] | None = api.inspect_volume(name)
            except docker.errors.NotFound:
                found = None
            if found is None:
                try:
                    api.create_volume(name, labels=labels)
                    continue
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                found = api.inspect_volume(name)  # created by a racing start of another slot
            have = found.get("Labels") or {}
            if have.get(LABEL_CLUSTER) != req.cluster or have.get(LABEL_APP) != req.app or not self._ours(have):
                raise VolumeConflict(f"volume {name} exists and is not app {req.app}'s: refusing to mount it")

    def ensure_image(
        self,
        image: str,
        auth: RegistryAuth | None = None,
        on_pull: Callable[[], None] | None = None,
        on_progress: Callable[[PullUpdate], None] | None = None,
    ) -> PullSummary | None:
        with _engine(f"look up image {image}"):
            try:
                self._docker().images.get(image)
                return None
            except docker.errors.APIError as exc:  # 404, or 400 for a malformed reference: pull decides
                if exc.status_code is None or exc.status_code >= 500:
                    raise
        if on_pull is not None:
            on_pull()
        repository, tag = docker.utils.parse_repository_tag(image)
        api = self._docker().api
        progress = PullProgress(image, on_progress)
        began = time.monotonic()

        def pull() -> None:
            # The low-level pull streams the engine's progress; an error after the stream began (the registry
            # refused a layer) arrives in it rather than as an HTTP status.
            stream = api.pull(
                repository, tag=tag or "latest", stream=True, decode=True, auth_config=auth.config() if auth else None
            )
            progress.follow(stream)

        try:
            # The SDK's pull has no HTTP timeout (it passes timeout=None): bound it here. The engine may finish
            # an abandoned pull later, which the next call then finds.
            _within(self._timeout, pull)
        except docker.errors.APIError as exc:  # the engine answered: no registry, no such image, refused
            raise pull_refused(image, str(exc.explanation or exc), auth) from exc
        except PullError as exc:
            raise pull_refused(image, str(exc), auth) from exc
        except TimeoutError as exc:
            raise ImageUnavailable(f"image {image}: the pull did not finish within {self._timeout:g} s") from exc
        except _TRANSPORT_ERRORS as exc:
            raise EngineUnavailable(f"Docker engine unreachable while pulling {image}: {_one_line(exc)}") from exc
        return progress.summary(time.monotonic() - began)

    def start_replica(self, req: ReplicaRequest) -> Observed:
        observed = self._start_replica(req)
        if observed.started_at is not None:
            with self._lock:
                self._started[observed.id] = observed.started_at
                while len(self._started) > STARTED_KEPT:
                    self._started.pop(next(iter(self._started)))
        return observed

    def _start_replica(self, req: ReplicaRequest) -> Observed:
        # So that create never pulls by itself, and a miss reads clearly.
        self.ensure_image(req.image, req.registry_auth)
        with _engine(f"start {req.name}"):
            existing = self._inspect(req.name)
            if existing is not None:
                self._check_owned(
                    existing, req.cluster, f"name {req.name} is taken by a container Orchestry does not own"
                )
                if _same_spec(existing, req) and _status(existing) == "created":
                    existing = self._wait_while_starting(req.name)  # a racing call is between create and start
                if existing is not None and _same_spec(existing, req) and _status(existing) == "running":
                    return _from_inspect(existing)
                if existing is not None and _same_spec(existing, req) and _status(existing) == "created":
                    # Still only created: its creator (an earlier term, fenced between create and start)
                    # is gone. Start that one: one container per slot, never a second.
                    return self._start_and_settle(existing["Id"], req.name, req.settle)
                if existing is not None:
                    self._remove(existing["Id"])
            self._ensure_volumes(req)
            try:
                container = self._docker().containers.create(**_create_args(req, self.installation))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                return self._adopt_racing(req)
            return self._start_and_settle(container.id, req.name, req.settle)

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        with _engine(f"stop {name}"):
            attrs = self._inspect(name)
            if attrs is None:
                return
            self._check_owned(attrs, cluster, f"refusing to stop {name}: it is not a container of cluster {cluster}")
            try:
                # The SDK adds the grace period to the client's HTTP timeout for this call.
                self._docker().api.stop(attrs["Id"], timeout=max(0, math.ceil(grace_seconds)))
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # gone, or already being removed
                    raise
            self._remove(attrs["Id"])

    def logs(self, cluster: str, app: str, lines: int, follow: bool) -> Iterator[LogLine]:
        """Without follow: the last `lines` lines of each replica, merged by time. With follow: `lines` lines of
        each replica and then new ones as they come. Either way the result has `close()`, which in follow mode stops
        the reader threads (from any thread)."""
        replicas = self.list_replicas(cluster, app)
        api = self._docker().api

        def read(container_id: str, stream: str, tail: int | str, follow: bool) -> Any:
            return api.logs(container_id, **_streams(stream), timestamps=True, tail=tail, stream=follow, follow=follow)

        return read_logs(app, [(r.name, r.id) for r in replicas], lines, follow, read)

    def events(self, cluster: str, since: datetime | None) -> EventStream:
        with _engine(f"watch the events of cluster {cluster}"):
            stream = self._docker().events(
                decode=True, filters={"type": "container", "label": f"{LABEL_CLUSTER}={cluster}"}, since=since
            )
        return EventStream(stream, self._ours)

    # -- resource usage (the fallback of runtime/stats.py when cgroup files cannot be read) --------------------

    def container_facts(self, container_id: str) -> ContainerFacts:
        with _engine(f"inspect container {container_id[:12]}"):
            attrs = self._inspect(container_id)
        if attrs is None:
            raise ContainerFailed(f"container {container_id[:12]} is gone")
        host = attrs.get("HostConfig") or {}
        nano = host.get("NanoCpus") or 0
        quota, period = host.get("CpuQuota") or 0, host.get("CpuPeriod") or 100_000
        cores = nano / 1e9 if nano > 0 else (quota / period if quota > 0 else None)
        pid = (attrs.get("State") or {}).get("Pid") or None
        return ContainerFacts(pid=pid, cpu_limit=cores, memory_limit=host.get("Memory") or None)

    def container_usage(self, container_id: str) -> Usage:
        """Docker's one-shot stats (API 1.41+: no second sample, so no one-second wait)."""
        with _engine(f"read the stats of container {container_id[:12]}"):
            raw: dict[str, Any] = self._docker().api.stats(container_id, stream=False, one_shot=True)
        at = time.monotonic()
        cpu = ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        memory = raw.get("memory_stats") or {}
        if cpu is None or "usage" not in memory:  # a stopped container answers with empty sections
            raise ContainerFailed(f"container {container_id[:12]} reported no usage")
        cache = memory.get("stats") or {}
        inactive = cache.get("inactive_file", cache.get("total_inactive_file", 0))
        used = int(memory["usage"])
        return Usage(
            at=at,
            cpu_usec=int(cpu) // 1000,
            memory_bytes=used - inactive if inactive < used else used,
            memory_limit=int(memory["limit"]) if memory.get("limit") else None,
        )

    # -- start helpers ----------------------------------------------------------------------------------------

    def _wait_while_starting(self, name: str, *, absent_too: bool = False) -> dict[str, Any] | None:
        """Inspect `name` until a racing start_replica has started it (or for CONCURRENT_START_SECONDS).

        After a 409 the name is reserved before the container can be inspected, hence `absent_too`."""
        deadline = time.monotonic() + CONCURRENT_START_SECONDS
        while True:
            attrs = self._inspect(name)
            starting = _status(attrs) == "created" if attrs is not None else absent_too
            if not starting or time.monotonic() >= deadline:
                return attrs
            time.sleep(POLL_SECONDS)

    def _adopt_racing(self, req: ReplicaRequest) -> Observed:
        """Create lost a race for the name (409): adopt the winner's container if it is the same spec."""
        attrs = self._wait_while_starting(req.name, absent_too=True)
        if attrs is not None:
            self._check_owned(attrs, req.cluster, f"name {req.name} is taken by a container Orchestry does not own")
            if _same_spec(attrs, req) and _status(attrs) == "running":
                return _from_inspect(attrs)
        raise ContainerFailed(f"{req.name} is being created or replaced by another call at the same time")

    def _start_and_settle(self, container_id: str, name: str, settle: float | None = None) -> Observed:
        api = self._docker().api
        try:
            api.start(container_id)
        except docker.errors.APIError as exc:  # the engine answered but could not start it (bad entrypoint...)
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                self._remove(container_id)
            raise ContainerFailed(f"{name} could not start: {_one_line(exc.explanation or exc)}") from exc
        deadline = time.monotonic() + (self._settle if settle is None else settle)
        while True:
            attrs = self._inspect(container_id)  # run/start return the pre-start state: read it again
            if attrs is None:
                raise ContainerFailed(f"{name} was removed while it was starting")
            if _status(attrs) != "running":
                raise self._failed_at_once(attrs, name)
            if time.monotonic() >= deadline:
                return _from_inspect(attrs)
            time.sleep(POLL_SECONDS)

    def _failed_at_once(self, attrs: dict[str, Any], name: str) -> ContainerFailed:
        state = attrs["State"]
        last = ""
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            data = self._docker().api.logs(attrs["Id"], stdout=True, stderr=True, tail=FAILED_LOG_LINES)
            last = " | ".join(line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip())
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            self._remove(attrs["Id"])
        detail = f"; {state['Error']}" if state.get("Error") else ""
        logs = f"; last output: {last}" if last else "; no output"
        return ContainerFailed(f"{name} exited at once with code {state.get('ExitCode')}{detail}{logs}")


def read_logs(
    app: str,
    replicas: list[tuple[str, str]],
    lines: int,
    follow: bool,
    read: Callable[[str, str, int | str, bool], Any],
) -> Iterator[LogLine]:
    """The logs of `replicas` ((name, the id `read` takes)), for both runtimes. Without follow: the last `lines`
    lines of each replica, merged by time. With follow: `lines` lines of each replica and then new ones as they
    come. `read(id, stream, tail, follow)` gives one stream's timestamped bytes (follow: a stream of them); one
    request per stream, as the SDK drops the stream id. Either way the result has `close()`, which in follow
    mode stops the reader threads (from any thread)."""
    tail: int | str = lines if lines >= 0 else "all"
    if not follow:
        merged: list[LogLine] = []
        with _engine(f"read the logs of {app}"):
            for name, replica_id in replicas:
                own: list[LogLine] = []
                for stream in ("stdout", "stderr"):
                    try:
                        data = read(replica_id, stream, tail, False)
                    except docker.errors.NotFound:
                        continue
                    own.extend(_parse_lines(name, stream, data.splitlines()))
                own.sort(key=lambda line: line.timestamp)
                merged.extend(own[max(0, len(own) - lines) :] if lines >= 0 else own)
        merged.sort(key=lambda line: line.timestamp)
        return (line for line in merged)  # a generator, so that close() works in both modes
    sources: list[tuple[str, str, Any]] = []
    try:
        with _engine(f"follow the logs of {app}"):
            for name, replica_id in replicas:
                for stream in ("stdout", "stderr"):
                    with contextlib.suppress(docker.errors.NotFound):
                        sources.append((name, stream, read(replica_id, stream, tail, True)))
    except RuntimeFailure:
        for _name, _stream, handle in sources:
            _shut_down(handle)
            _release(handle)
        raise
    return LogFollower(sources)


class LogFollower:
    """Log lines of several streams, read by one daemon thread each, in arrival order.

    `close()` may be called from any thread: it shuts the HTTP streams down, which ends the readers at once.
    """

    def __init__(self, sources: list[tuple[str, str, Any]]) -> None:
        self._queue: queue.Queue[LogLine | None] = queue.Queue()
        self._handles = [handle for _name, _stream, handle in sources]
        self._open = len(sources)
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._read, args=source, name=f"orchestry-logs-{source[0]}", daemon=True)
            for source in sources
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, replica: str, stream: str, handle: Any) -> None:
        try:
            for line in _parse_lines(replica, stream, _split_lines(handle)):
                if self._closed.is_set():
                    break
                self._queue.put(line)
        except (*_TRANSPORT_ERRORS, ValueError):
            pass  # a broken stream ends this reader like the end of the stream does
        finally:
            _release(handle)
            self._queue.put(None)

    def __iter__(self) -> LogFollower:
        return self

    def __next__(self) -> LogLine:
        while self._open and not self._closed.is_set():
            line = self._queue.get()
            if line is None:
                self._open -= 1
            elif not self._closed.is_set():
                return line
        raise StopIteration

    def close(self) -> None:
        self._closed.set()
        for handle in self._handles:
            _shut_down(handle)  # each reader then sees the end of its stream and releases it
        self._queue.put(None)  # wakes a consumer blocked in __next__
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)

    def __enter__(self) -> LogFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream:
    """The cluster's container events; ends when the stream breaks. `close()` works from any thread."""

    def __init__(self, stream: Any, ours: Callable[[dict[str, str]], bool] = lambda _: True) -> None:
        self._stream = stream
        self._ours = ours  # another installation's containers' events are not ours
        self._lock = threading.Lock()
        self._reading = False
        self._done = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> EngineEvent:
        with self._lock:
            if self._done:
                raise StopIteration
            self._reading = True
        try:
            for raw in self._stream:
                event = _event(raw)
                if event is not None and self._ours((raw.get("Actor") or {}).get("Attributes") or {}):
                    return event
        except (*_TRANSPORT_ERRORS, ValueError):
            pass  # a broken stream ends like a closed one: the caller reconnects with since=
        finally:
            with self._lock:
                self._reading = False
        self._finish()
        raise StopIteration

    def close(self) -> None:
        _shut_down(self._stream)  # a reader blocked in __next__ returns at once and releases the stream
        with self._lock:
            idle = not self._reading
        if idle:
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        _release(self._stream)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- translation ------------------------------------------------------------------------------------------------


def connect(base_url: str | None, timeout: float, **options: Any) -> docker.DockerClient:
    """A client of the engine at `base_url`, else of DOCKER_HOST (else the local engine)."""
    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=int(timeout), **options)
    return docker.from_env(timeout=int(timeout), **options)


@contextlib.contextmanager
def _engine(doing: str) -> Iterator[None]:
    """Let only the runtime's own errors out: no answer or 5xx → EngineUnavailable, 4xx → ContainerFailed."""
    try:
        yield
    except docker.errors.APIError as exc:
        if exc.status_code is None or exc.status_code >= 500:
            raise EngineUnavailable(f"Docker engine failed to {doing}: {_one_line(exc)}") from exc
        raise ContainerFailed(f"Docker refused to {doing}: {_one_line(exc.explanation or exc)}") from exc
    except _TRANSPORT_ERRORS as exc:
        raise EngineUnavailable(f"Docker engine unreachable, could not {doing}: {_one_line(exc)}") from exc


def _one_line(exc: object, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PullError(Exception):
    """An error the engine reported inside a pull's progress stream."""


class PullProgress:
    """Reads a pull's progress stream (one JSON object per event) into a summary: layers, bytes, digest; and,
    with `report`, into a PullUpdate after every event that moved (the job throttles what it records)."""

    def __init__(self, image: str, report: Callable[[PullUpdate], None] | None = None) -> None:
        self.image = image
        self.report = report
        self.layers: set[str] = set()
        self.fetched: set[str] = set()
        self.present: set[str] = set()  # downloaded now, or already on the host
        self.sizes: dict[str, int] = {}
        self.current: dict[str, int] = {}  # bytes downloaded so far, by layer
        self.digest: str | None = None

    def follow(self, events: Any) -> None:
        for event in events:
            if event.get("error"):
                raise PullError(str((event.get("errorDetail") or {}).get("message") or event["error"]))
            status, layer = str(event.get("status") or ""), str(event.get("id") or "")
            if status.startswith("Digest: "):
                self.digest = status.removeprefix("Digest: ").strip()
                continue
            if status in ("Pulling fs layer", "Waiting"):
                self.layers.add(layer)
            elif status == "Already exists":
                self.layers.add(layer)
                self.present.add(layer)
            elif status in ("Download complete", "Verifying Checksum"):
                self.layers.add(layer)
                if layer in self.sizes:
                    self.current[layer] = self.sizes[layer]
            elif status == "Pull complete":
                self.layers.add(layer)
                self.fetched.add(layer)
                self.present.add(layer)
                if layer in self.sizes:
                    self.current[layer] = self.sizes[layer]
            elif status == "Downloading":
                detail = event.get("progressDetail") or {}
                total, current = detail.get("total"), detail.get("current")
                if isinstance(total, int) and total > 0:
                    self.sizes[layer] = total
                if isinstance(current, int) and current >= 0:
                    self.current[layer] = current
            else:
                continue
            if self.report is not None:
                self.report(self.update())

    def update(self) -> PullUpdate:
        return PullUpdate(
            image=self.image,
            layers=len(self.layers),
            layers_done=len(self.present),
            bytes_done=sum(self.current.values()),
            bytes_total=sum(self.sizes.values()),
        )

    def summary(self, seconds: float) -> PullSummary:
        return PullSummary(
            image=self.image,
            layers=len(self.layers),
            downloaded=len(self.fetched),
            bytes=sum(size for layer, size in self.sizes.items() if layer in self.fetched),
            seconds=round(seconds, 3),
            digest=self.digest,
        )


def pull_refused(image: str, error: str, auth: RegistryAuth | None) -> ImageUnavailable:
    """The engine's pull error as the user should read it (workflows/registry.py classifies it)."""
    return ImageUnavailable(pull_failure(image, error, authenticated=auth is not None).message)


def _within(seconds: float, call: Callable[[], object]) -> None:
    """Run `call` in a daemon thread; re-raise its exception, or TimeoutError after `seconds`."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="orchestry-pull", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds} s")
    if errors:
        raise errors[0]


def _shut_down(handle: Any) -> None:
    """CancellableStream.close() shuts the socket down (it does not close it): safe from any thread."""
    with contextlib.suppress(Exception):  # a stream that already broke may raise anything here
        handle.close()


def _release(handle: Any) -> None:
    """Close the HTTP response behind a finished stream, or its socket lingers until garbage collection.

    The SDK keeps that response in the private `_response`; only the thread that read the stream calls this."""
    response = getattr(handle, "_response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            response.close()


def _labels(attrs: dict[str, Any]) -> dict[str, str]:
    return (attrs.get("Config") or {}).get("Labels") or {}


def _status(attrs: dict[str, Any]) -> str:
    return str(attrs["State"]["Status"])


def _same_spec(attrs: dict[str, Any], req: ReplicaRequest) -> bool:
    return _labels(attrs).get(LABEL_SPEC_HASH) == req.spec_hash


def _create_args(req: ReplicaRequest, installation: str | None = None) -> dict[str, Any]:
    labels = replica_labels(req, installation)
    args: dict[str, Any] = {
        "image": req.image,
        "name": req.name,
        "labels": labels,
        "environment": dict(req.env),
        "restart_policy": {"Name": "no"},  # Orchestry owns restarts; Docker's would fight its replacements
        "stop_signal": "SIGTERM",
        "detach": True,
    }
    published = ([req.container_port] if req.container_port is not None else []) + list(req.extra_ports)
    if published:
        args["ports"] = {f"{p}/tcp": (LOOPBACK, None) for p in dict.fromkeys(published)}
    if req.command is not None:
        args["entrypoint"] = list(req.command)
    if req.args is not None:
        args["command"] = list(req.args)
    if req.working_dir:
        args["working_dir"] = req.working_dir
    if req.volumes:
        args["volumes"] = {volume: {"bind": path, "mode": "rw"} for volume, path in req.volumes}
    if req.nano_cpus is not None:
        args["nano_cpus"] = req.nano_cpus
    if req.memory_bytes is not None:
        args["mem_limit"] = req.memory_bytes
    if req.init:
        args["init"] = True
    return args


def _from_summary(summary: dict[str, Any]) -> Observed:
    """An entry of GET /containers/json: labels, state, bindings and creation time, without an inspect."""
    labels = summary.get("Labels") or {}
    private = label_int(labels.get(LABEL_PORT), -1)
    port = next(
        (
            int(binding["PublicPort"])
            for binding in summary.get("Ports") or []
            if binding.get("PrivatePort") == private
            and binding.get("IP") == LOOPBACK
            and binding.get("Type", "tcp") == "tcp"
            and binding.get("PublicPort")
        ),
        None,
    )
    published = tuple(
        sorted(
            (int(b["PrivatePort"]), int(b["PublicPort"]))
            for b in summary.get("Ports") or []
            if b.get("IP") == LOOPBACK and b.get("Type", "tcp") == "tcp" and b.get("PublicPort")
        )
    )
    names = summary.get("Names") or [""]
    exited = _EXITED.search(summary.get("Status") or "")
    created = summary.get("Created")
    return replica_from_labels(
        labels,
        host=LOOPBACK,
        replica_id=summary["Id"],
        name=names[0].lstrip("/"),
        state=summary.get("State") or "unknown",
        port=port,
        started_at=datetime.fromtimestamp(created, UTC) if created else None,
        exit_code=int(exited.group(1)) if exited else None,
        ports=published,
    )


def _precise(observed: Observed, started: dict[str, datetime]) -> Observed:
    known = started.get(observed.id)
    return observed if known is None else dataclasses.replace(observed, started_at=known)


def _from_inspect(attrs: dict[str, Any]) -> Observed:
    labels = _labels(attrs)
    state = attrs["State"]
    port = None
    private = labels.get(LABEL_PORT)
    if private is not None:
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{private}/tcp") or []
        port = next((int(b["HostPort"]) for b in bindings if b.get("HostIp") == LOOPBACK and b.get("HostPort")), None)
    bound = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    published = tuple(
        sorted(
            (int(key.split("/")[0]), int(b["HostPort"]))
            for key, bindings in bound.items()
            if key.endswith("/tcp")
            for b in bindings or []
            if b.get("HostIp") == LOOPBACK and b.get("HostPort")
        )
    )
    running = state.get("Status") == "running"
    return replica_from_labels(
        labels,
        host=LOOPBACK,
        replica_id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        state=state.get("Status") or "unknown",
        port=port,
        started_at=_timestamp(state.get("StartedAt") or ""),
        exit_code=None if running else state.get("ExitCode"),
        ports=published,
    )


def _timestamp(text: str) -> datetime | None:
    """Docker's RFC 3339 times with nanoseconds; its zero time ("0001-01-01T00:00:00Z") means never."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if moment.year <= 1 else moment


def _streams(stream: str) -> dict[str, bool]:
    return {"stdout": stream == "stdout", "stderr": stream == "stderr"}


def _split_lines(chunks: Any) -> Iterator[bytes]:
    """Whole lines out of a stream of frames (a frame may hold part of a line, or several)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _parse_lines(replica: str, stream: str, raw_lines: Any) -> Iterator[LogLine]:
    """`2026-01-02T03:04:05.123456789Z text` lines (Docker's timestamps=True) → LogLine."""
    for raw in raw_lines:
        stamp, _, text = raw.partition(b" ")
        moment = _timestamp(stamp.decode("ascii", "replace"))
        if moment is None:  # not a timestamp: keep the whole line, at the time we read it
            moment, text = datetime.now(UTC), raw
        yield LogLine(
            replica=replica, timestamp=moment, stream=stream, text=text.decode("utf-8", "replace").rstrip("\r")
        )


def _event(raw: dict[str, Any]) -> EngineEvent | None:
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    action = raw.get("Action") or raw.get("status") or ""
    if not action:
        return None
    nanos = raw.get("timeNano")
    moment = datetime.fromtimestamp(nanos / 1e9 if nanos else raw.get("time", time.time()), UTC)
    return EngineEvent(
        action=action.split(":", 1)[0],  # "exec_start: sh -c ..." and "health_status: healthy" keep their verb
        container_id=raw.get("id") or actor.get("ID") or "",
        name=attributes.get("name", ""),
        app=attributes.get(LABEL_APP, ""),
        time=moment,
    )
