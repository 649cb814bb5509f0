"""The Docker Swarm implementation of `Runtime` (`runtime: swarm`): replicas placed on the hosts of a swarm.

Design notes:
- **One Swarm service per replica slot** (`<cluster>-<app>-<slot>`, one task), not one service per app.
  Orchestry keeps choosing which replica drains and which stops (scale-in drains the replicas that do not
  serve first, then the newest; a rollout drains an old replica only once a new one is healthy and routed),
  and a service per app cannot be told which of its tasks to remove: `docker service scale` picks for itself.
  Swarm places each slot's task on a node and reschedules it when its node is drained or lost. Starting ten
  one-task services costs what one ten-task service does (measured on three hosts: 2.0-2.1 s vs 1.9-2.0 s to
  ten running tasks, /work/shared/traps.md), and they spread over the hosts the same way.
- The slot's service carries Orchestry's labels (cluster, app, slot, revision, spec hash, installation, port)
  on the service and on its container; its restart condition is `none`, because Orchestry owns restarts (a
  dead task is a dead replica, replaced by the converge job, as on the docker runtime).
- Ports are published in **host mode** on the node's own address, on a port the node picks: Swarm's ingress
  routing mesh needs IPVS, and Orchestry's nginx routes to each replica itself anyway. A replica's address
  is `<its node's address>:<published port>`, for routing and for health probes alike.
- CPU and memory become limits and reservations, so Swarm does not put more on a node than it holds.
- Placement: the user's constraints go to Swarm as they are; `spread` and `maxReplicasPerNode` become
  constraints on each new slot (`workflows/placement.py` says why), computed under a per-app lock so that
  slots started at once see each other.
- Images: every node must find the image (a registry, or loaded on each node). `ensure_image` cannot look at
  the other nodes from the manager: a task whose image is missing fails, and that failure is reported.
- Volumes are each node's own (a replica rescheduled elsewhere does not take its data along).
- Engine events of a swarm's tasks happen on the nodes, not on the manager: `events` polls the tasks once a
  second and reports a task that stopped running as a `die`, so the reconcile loop wakes as it does for a
  container.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import docker.auth
import docker.errors

from orchestry.runtime.common import label_int, owned, replica_from_labels, replica_labels
from orchestry.runtime.docker_engine import (
    _TRANSPORT_ERRORS,
    _engine,
    _one_line,
    _streams,
    _timestamp,
    connect,
    pull_refused,
    read_logs,
)
from orchestry.runtime.types import (
    LABEL_APP,
    LABEL_CLUSTER,
    LABEL_PORT,
    LABEL_SPEC_HASH,
    ContainerFailed,
    EngineEvent,
    EngineUnavailable,
    ImageUnavailable,
    LogLine,
    NodeInfo,
    Observed,
    PullSummary,
    PullUpdate,
    RegistryAuth,
    ReplicaRequest,
    RuntimeFailure,
)
from orchestry.workflows.hosts import DRAINED_LABEL, LOST
from orchestry.workflows.placement import Node, Placement, Unplaceable, slot_constraints
from orchestry.workflows.registry import DOCKER_HUB, OTHER, pull_failure, registry_of

LABEL_DRAINED = DRAINED_LABEL  # on a Swarm node Orchestry drained, with why
POLL_SECONDS = 0.05
START_SECONDS = 60.0  # a slot's task running (scheduled, image found, started)
PENDING_SECONDS = 5.0  # a task Swarm cannot place for this long fails the start (no node fits)
EVENT_POLL_SECONDS = 1.0
LIST_ATTEMPTS = 3
NODE_CHECK_SECONDS = 1.0  # how often a start looks at the host its task was given
# Task states: https://docs.docker.com/engine/swarm/how-swarm-mode-works/swarm-task-states/
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
_MISSING_IMAGE = ("No such image", "pull access denied", "manifest unknown", "not found")


class SwarmEngine:
    """`Runtime` on a Swarm manager. Thread-safe: one instance serves every job worker."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        timeout: float = 30,
        *,
        base_url: str | None = None,
        installation: str | None = None,
        settle: float = 0.25,
        start_seconds: float = START_SECONDS,
    ) -> None:
        self._client = client
        self._base_url = base_url or None
        self.installation = installation
        self._timeout = timeout
        self._settle = settle
        self._start_seconds = start_seconds
        self._lock = threading.Lock()
        self._app_locks: dict[str, threading.Lock] = {}

    # -- plumbing -------------------------------------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                with _engine("connect to the Swarm manager"):
                    self._client = connect(self._base_url, self._timeout)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _app_lock(self, app: str) -> threading.Lock:
        with self._lock:
            return self._app_locks.setdefault(app, threading.Lock())

    def _ours(self, labels: dict[str, str]) -> bool:
        return owned(labels, self.installation)

    def _services(self, cluster: str, app: str | None = None) -> list[dict[str, Any]]:
        labels = [f"{LABEL_CLUSTER}={cluster}"] + ([f"{LABEL_APP}={app}"] if app is not None else [])
        services: list[dict[str, Any]] = self._docker().api.services(filters={"label": labels})
        return [s for s in services if self._ours(_service_labels(s))]

    def _tasks(self, services: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Each service's tasks (by service id), in one request."""
        if not services:
            return {}
        tasks = self._docker().api.tasks(filters={"service": [s["ID"] for s in services]})
        out: dict[str, list[dict[str, Any]]] = {s["ID"]: [] for s in services}
        for task in tasks:
            out.setdefault(task.get("ServiceID", ""), []).append(task)
        return out

    def _nodes(self) -> dict[str, dict[str, Any]]:
        return {n["ID"]: n for n in self._docker().api.nodes()}

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            service: dict[str, Any] = self._docker().api.inspect_service(name)
        except docker.errors.NotFound:
            return None
        return service

    # -- Runtime ----------------------------------------------------------------------------------------------

    def _slots(self, cluster: str, app: str | None = None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Each slot's service with its current task (None: none yet), in two requests whatever their number."""
        with _engine(f"list the services of cluster {cluster}"):
            for attempt in range(LIST_ATTEMPTS):
                services = self._services(cluster, app)
                try:
                    tasks = self._tasks(services)
                    break
                except docker.errors.NotFound:  # a service removed between the two requests: list again
                    if attempt == LIST_ATTEMPTS - 1:
                        raise
        return [(s, _current(tasks.get(s["ID"], []))) for s in services]

    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        slots = self._slots(cluster, app)
        with _engine("list the Swarm's nodes"):
            nodes = self._nodes() if slots else {}
        observed = [_observed(service, task, nodes) for service, task in slots]
        return sorted(observed, key=lambda o: (o.app, o.slot, o.name))

    def foreign_containers(self, cluster: str) -> list[str]:
        with _engine(f"list the services of cluster {cluster}"):
            services = self._docker().api.services(filters={"label": [f"{LABEL_CLUSTER}={cluster}"]})
        return sorted(_name(s) for s in services if not self._ours(_service_labels(s)))

    def ensure_image(
        self,
        image: str,
        auth: RegistryAuth | None = None,
        on_pull: Callable[[], None] | None = None,
        on_progress: Callable[[PullUpdate], None] | None = None,
    ) -> PullSummary | None:
        """Each node pulls the image itself when it starts a task (a miss fails that task: see start_replica).
        An image of a registry other than Docker Hub, or with credentials, is looked up in its registry from the
        manager first (no pull), so a missing tag or refused credentials fail the job within seconds, not per
        task. A registry the manager cannot reach is left to the nodes."""
        if auth is None and registry_of(image) == DOCKER_HUB:
            return None
        api = self._docker().api
        try:
            api.inspect_distribution(image, auth_config=auth.config() if auth else None)
        except docker.errors.APIError as exc:  # the registry's answer as the engine relays it (often a 500)
            error = str(exc.explanation or exc)
            if pull_failure(image, error, authenticated=auth is not None).kind != OTHER:
                raise pull_refused(image, error, auth) from None
        except _TRANSPORT_ERRORS as exc:
            raise EngineUnavailable(f"Swarm manager unreachable while looking up {image}: {_one_line(exc)}") from exc
        return None  # found, or a registry the manager cannot reach: the nodes try

    def start_replica(self, req: ReplicaRequest) -> Observed:
        with _engine(f"start {req.name}"):
            existing = self._inspect(req.name)
            if existing is not None:
                labels = _service_labels(existing)
                if labels.get(LABEL_CLUSTER) != req.cluster or not self._ours(labels):
                    raise ContainerFailed(f"name {req.name} is taken by a Swarm service Orchestry does not own")
                task = _current(self._tasks([existing]).get(existing["ID"], []))
                state = _task_state(task)
                if labels.get(LABEL_SPEC_HASH) == req.spec_hash and state in ("running", "created"):
                    return self._wait_running(existing, req.name)  # adopt: one service per slot, never a second
                self._remove(existing["ID"])
            with self._app_lock(req.app):  # the slots started at once see each other's nodes
                constraints = self._constraints(req)
                try:
                    created = _create_service(
                        self._docker().api, _service_args(req, constraints, self.installation), req.registry_auth
                    )
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise
                    raise ContainerFailed(f"{req.name} is being created by another call at the same time") from None
                service = self._inspect(created["ID"]) or {"ID": created["ID"], "Spec": {"Name": req.name}}
                if req.spread is not None or req.max_per_node is not None:
                    self._wait_assigned(service)  # so the next slot's placement counts this one on its node
            return self._wait_running(service, req.name)

    def _constraints(self, req: ReplicaRequest) -> list[str]:
        placement = Placement(req.constraints, req.spread, req.max_per_node)
        if req.spread is None and req.max_per_node is None:
            return list(req.constraints)
        nodes = [_node_view(n) for n in self._nodes().values()]
        placed = [
            task["NodeID"]
            for _service, task in self._slots(req.cluster, req.app)
            if task is not None and task.get("NodeID") and _task_state(task) != "exited"
        ]
        try:
            return list(slot_constraints(placement, nodes, placed))
        except Unplaceable as exc:
            raise ContainerFailed(f"{req.name} cannot be placed: {exc}") from None

    def _wait_assigned(self, service: dict[str, Any]) -> None:
        deadline = time.monotonic() + PENDING_SECONDS
        while time.monotonic() < deadline:
            task = _current(self._tasks([service]).get(service["ID"], []))
            if task is not None and (task.get("NodeID") or _task_state(task) == "exited"):
                return
            time.sleep(POLL_SECONDS)

    def _wait_running(self, service: dict[str, Any], name: str) -> Observed:
        """Until the slot's task runs (then `settle` more seconds, to catch a command that exits at once)."""
        deadline = time.monotonic() + self._start_seconds
        pending_since: float | None = None
        running_since: float | None = None
        node_checked = time.monotonic()
        while True:
            task = _current(self._tasks([service]).get(service["ID"], []))
            state = (task or {}).get("Status", {}).get("State", "new")
            now = time.monotonic()
            if state == "running":
                running_since = running_since or now
                if now - running_since >= self._settle:
                    return _observed(service, task, self._nodes())
            elif state in _ENDED:
                raise self._failed(service, name, task or {})
            elif state == "pending" and (task or {}).get("Status", {}).get("Err"):
                pending_since = pending_since or now  # Swarm finds no node for it (constraints, resources)
                if now - pending_since >= PENDING_SECONDS:
                    raise self._failed(service, name, task or {})
            if task is not None and task.get("NodeID") and now - node_checked >= NODE_CHECK_SECONDS:
                node_checked = now
                node = self._nodes().get(task["NodeID"])
                view = _node_view(node) if node is not None else None
                if view is None or not view.available:  # given to a host that was lost or drained meanwhile
                    self._remove(service["ID"])
                    host = view.hostname if view is not None else task["NodeID"]
                    raise ContainerFailed(f"{name}: its host {host} is no longer available (drained or down)")
            if now >= deadline:
                self._remove(service["ID"])
                raise ContainerFailed(f"{name}: its task did not run within {self._start_seconds:.0f} s ({state})")
            time.sleep(POLL_SECONDS)

    def _failed(self, service: dict[str, Any], name: str, task: dict[str, Any]) -> RuntimeFailure:
        status = task.get("Status") or {}
        why = status.get("Err") or status.get("Message") or status.get("State") or "unknown"
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            self._remove(service["ID"])
        if any(marker in why for marker in _MISSING_IMAGE):
            image = (((service.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")
            return ImageUnavailable(f"image {image} is not available on the node Swarm chose for {name}: {why}")
        exit_code = f" with code {code}" if code else ""
        return ContainerFailed(f"{name}: its task {status.get('State', 'failed')}{exit_code}: {_one_line(why)}")

    def _remove(self, service_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._docker().api.remove_service(service_id)

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        """Remove the slot's service: its node stops the task (SIGTERM, SIGKILL after the service's own grace
        period, the spec's termination.gracePeriodSeconds) and removes the container."""
        with _engine(f"stop {name}"):
            service = self._inspect(name)
            if service is None:
                return
            labels = _service_labels(service)
            if labels.get(LABEL_CLUSTER) != cluster or not self._ours(labels):
                raise ContainerFailed(f"refusing to stop {name}: it is not a service of cluster {cluster}")
            self._remove(service["ID"])

    def logs(self, cluster: str, app: str, lines: int, follow: bool) -> Iterator[LogLine]:
        """The slots' service logs (Swarm gathers them from the nodes), merged by time; as DockerEngine.logs."""
        with _engine(f"list the services of {app}"):
            services = self._services(cluster, app)
        api = self._docker().api

        def read(service_id: str, stream: str, tail: int | str, follow: bool) -> Any:
            handle = api.service_logs(service_id, **_streams(stream), timestamps=True, tail=tail, follow=follow)
            return handle if follow else b"".join(handle)

        return read_logs(app, [(_name(s), s["ID"]) for s in services], lines, follow, read)

    def events(self, cluster: str, since: datetime | None) -> TaskEvents:
        return TaskEvents(self, cluster)

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        return []  # each node's own: not listed from the manager

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        return []

    # -- nodes ------------------------------------------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """The swarm's nodes as its manager sees them."""
        with _engine("list the Swarm's nodes"):
            nodes = self._docker().api.nodes()
        return sorted((_node_info(n) for n in nodes), key=lambda n: (n.name, n.id))

    def drain_host(self, address: str) -> NodeInfo | None:
        """Availability `drain` for the node at `address`, labelled as drained by Orchestry because it was lost
        (so that a person reading `docker node ls` knows who did it). Already drained: nothing changes."""
        with _engine(f"drain the host at {address}"):
            api = self._docker().api
            for node in api.nodes():
                if (node.get("Status") or {}).get("Addr") != address:
                    continue
                spec = dict(node.get("Spec") or {})
                if spec.get("Availability") != "drain":
                    spec["Availability"] = "drain"
                    spec["Labels"] = {**(spec.get("Labels") or {}), LABEL_DRAINED: LOST}
                    api.update_node(node["ID"], node["Version"]["Index"], spec)
                    node = api.inspect_node(node["ID"])
                return _node_info(node)
        return None

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        """The host named `name` (its hostname, or its node id) set to `availability`, with Orchestry's drain
        label set to `drained_for` (None: removed). Unchanged: no update is sent."""
        with _engine(f"set host {name} to {availability}"):
            api = self._docker().api
            node = next(
                (n for n in api.nodes() if n["ID"] == name or (n.get("Description") or {}).get("Hostname") == name),
                None,
            )
            if node is None:
                raise ContainerFailed(f"no Swarm host is named {name}")
            spec = dict(node.get("Spec") or {})
            labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k != LABEL_DRAINED}
            if drained_for is not None:
                labels[LABEL_DRAINED] = drained_for
            if spec.get("Availability") != availability or (spec.get("Labels") or {}) != labels:
                spec["Availability"], spec["Labels"] = availability, labels
                api.update_node(node["ID"], node["Version"]["Index"], spec)
                node = api.inspect_node(node["ID"])
            return _node_info(node)

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        """This installation's tasks on the node that the manager wants stopped (shutdown, or removed with their
        service) while the node still reports them running: what a host cut off from the manager kept running."""
        with _engine(f"list the tasks of host {node_id}"):
            tasks = self._docker().api.tasks(filters={"node": node_id})
        stale = []
        for task in tasks:
            labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
            if labels.get(LABEL_CLUSTER) != cluster or not self._ours(labels):
                continue
            if task.get("DesiredState") not in ("running", "ready", "accepted", "assigned") and _task_state(task) in (
                "running",
                "created",
            ):
                stale.append(str(task["ID"]))
        return sorted(stale)


class TaskEvents:
    """A `die` for every slot task that stopped running, found by polling the tasks once a second (a swarm's
    container events happen on its nodes, out of the manager's event stream). `close()` works from any thread."""

    def __init__(self, engine: SwarmEngine, cluster: str) -> None:
        self._engine = engine
        self._cluster = cluster
        self._closed = threading.Event()
        self._running: dict[str, tuple[str, str]] | None = None  # task id -> (service name, app)
        self._pending: list[EngineEvent] = []

    def __iter__(self) -> TaskEvents:
        return self

    def __next__(self) -> EngineEvent:
        while not self._closed.is_set():
            if self._pending:
                return self._pending.pop(0)
            self._poll()
            if not self._pending:
                self._closed.wait(EVENT_POLL_SECONDS)
        raise StopIteration

    def _poll(self) -> None:
        """Two requests (the services, their tasks) whatever the number of slots; raises: the watcher reopens."""
        running = {
            task["ID"]: (_name(service), _service_labels(service).get(LABEL_APP, ""))
            for service, task in self._engine._slots(self._cluster)
            if task is not None and _task_state(task) == "running"
        }
        if self._running is not None:
            now = datetime.now(UTC)
            for task_id, (name, app) in self._running.items():
                if task_id not in running:
                    self._pending.append(EngineEvent("die", task_id, name, app, now))
        self._running = running

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> TaskEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- translation ------------------------------------------------------------------------------------------------


def _service_labels(service: dict[str, Any]) -> dict[str, str]:
    return ((service.get("Spec") or {}).get("Labels")) or {}


def _name(service: dict[str, Any]) -> str:
    return str((service.get("Spec") or {}).get("Name") or service.get("ID", "?"))


def _task_state(task: dict[str, Any] | None) -> str:
    """The task's state in Docker's container words: created (on its way), running, exited."""
    if task is None:
        return "created"
    state = (task.get("Status") or {}).get("State", "new")
    if state == "running":
        return "running"
    return "exited" if state in _ENDED else "created"


def _current(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The slot's task that counts: the newest one Swarm wants running, else the newest one."""
    if not tasks:
        return None
    by_age = sorted(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0), reverse=True)
    wanted = [t for t in by_age if t.get("DesiredState") in ("running", "ready", "accepted", "assigned")]
    return (wanted or by_age)[0]


def _observed(service: dict[str, Any], task: dict[str, Any] | None, nodes: dict[str, dict[str, Any]]) -> Observed:
    labels = _service_labels(service)
    status = (task or {}).get("Status") or {}
    state = _task_state(task)
    node = nodes.get((task or {}).get("NodeID", "")) or {}
    address = (node.get("Status") or {}).get("Addr") or None
    published = tuple(
        sorted(
            {
                (int(p["TargetPort"]), int(p["PublishedPort"]))
                for p in (status.get("PortStatus") or {}).get("Ports") or []
                if p.get("PublishedPort") and p.get("Protocol", "tcp") == "tcp"
            }
        )
    )
    private = label_int(labels.get(LABEL_PORT), -1)
    port = next((public for target, public in published if target == private), None) if state == "running" else None
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode") if state == "exited" else None
    return replica_from_labels(
        labels,
        replica_id=(task or {}).get("ID") or service["ID"],
        name=_name(service),
        state=state,
        host=address,
        port=port,
        started_at=_timestamp(status.get("Timestamp") or "") if state == "running" else None,
        exit_code=exit_code,
        ports=published,
        node=(task or {}).get("NodeID") or None,
        node_name=(node.get("Description") or {}).get("Hostname") or None,
    )


def _node_view(node: dict[str, Any]) -> Node:
    spec, description = node.get("Spec") or {}, node.get("Description") or {}
    state = (node.get("Status") or {}).get("State")
    return Node(
        id=node["ID"],
        hostname=description.get("Hostname", ""),
        role=spec.get("Role", "worker"),
        labels=spec.get("Labels") or {},
        available=state == "ready" and spec.get("Availability") == "active",
    )


def _node_info(node: dict[str, Any]) -> NodeInfo:
    spec, description, status = node.get("Spec") or {}, node.get("Description") or {}, node.get("Status") or {}
    return NodeInfo(
        id=node["ID"],
        name=description.get("Hostname", ""),
        address=status.get("Addr", ""),
        state=status.get("State", "unknown"),
        availability=spec.get("Availability", "unknown"),
        role=spec.get("Role", "worker"),
        labels=dict(spec.get("Labels") or {}),
        leader=bool((node.get("ManagerStatus") or {}).get("Leader")),
    )


def _service_args(req: ReplicaRequest, constraints: list[str], installation: str | None) -> dict[str, Any]:
    """The create_service arguments of one slot (the Engine API's ServiceSpec, through docker-py's low-level API)."""
    labels = replica_labels(req, installation)
    container: dict[str, Any] = {
        "Image": req.image,
        "Labels": labels,
        "Env": [f"{key}={value}" for key, value in req.env.items()],
        "StopSignal": "SIGTERM",
    }
    if req.stop_grace_seconds is not None:
        container["StopGracePeriod"] = int(req.stop_grace_seconds * 1e9)
    if req.command is not None:
        container["Command"] = list(req.command)
    if req.args is not None:
        container["Args"] = list(req.args)
    if req.working_dir:
        container["Dir"] = req.working_dir
    if req.volumes:
        container["Mounts"] = [
            {"Type": "volume", "Source": volume, "Target": path, "VolumeOptions": {"Labels": {**labels}}}
            for volume, path in req.volumes
        ]
    resources: dict[str, Any] = {}
    if req.nano_cpus is not None:
        resources["NanoCPUs"] = req.nano_cpus
    if req.memory_bytes is not None:
        resources["MemoryBytes"] = req.memory_bytes
    published = ([req.container_port] if req.container_port is not None else []) + list(req.extra_ports)
    template: dict[str, Any] = {
        "ContainerSpec": container,
        "RestartPolicy": {"Condition": "none"},  # Orchestry owns restarts, as on the docker runtime
        "Placement": {"Constraints": constraints} if constraints else {},
    }
    if resources:
        template["Resources"] = {"Limits": resources, "Reservations": dict(resources)}
    args: dict[str, Any] = {
        "task_template": template,
        "name": req.name,
        "labels": labels,
        "mode": {"Replicated": {"Replicas": 1}},
    }
    if published:
        # Host mode on a port the node picks: no ingress mesh (it needs IPVS), nginx reaches each task itself.
        args["endpoint_spec"] = {
            "Mode": "dnsrr",
            "Ports": [{"Protocol": "tcp", "TargetPort": p, "PublishMode": "host"} for p in dict.fromkeys(published)],
        }
    return args


def _create_service(api: Any, args: dict[str, Any], auth: RegistryAuth | None) -> dict[str, Any]:
    """`POST /services/create`. With credentials, they go in the `X-Registry-Auth` header, which the manager
    hands to the node that pulls the task's image. docker-py's `create_service` takes that header only from the
    local Docker config file (`auth.get_config_header`), never per call, so the request is made here as it makes
    it (docker/api/service.py), with the header of these credentials."""
    if auth is None:
        created: dict[str, Any] = api.create_service(**args)
        return created
    data = {
        "Name": args["name"],
        "Labels": args["labels"],
        "TaskTemplate": args["task_template"],
        "Mode": args["mode"],
        "EndpointSpec": args.get("endpoint_spec"),
    }
    headers = {"X-Registry-Auth": docker.auth.encode_header(auth.config())}
    created = api._result(api._post_json(api._url("/services/create"), data=data, headers=headers), True)
    return created
