"""The runtime's vocabulary: what Orchestry asks of a container engine and what it observes.

Job handlers and planners speak only these types; `docker_engine` translates them to the Docker SDK, and
tests of jobs may use a recording fake with the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from orchestry.workflows.hosts import DRAINED_LABEL, HostView

# Labels on every container Orchestry creates. A container without LABEL_CLUSTER == our cluster name is
# never touched.
LABEL_CLUSTER = "org.orchestry.cluster"
LABEL_APP = "org.orchestry.app"
LABEL_SLOT = "org.orchestry.slot"
LABEL_REVISION = "org.orchestry.revision"
LABEL_SPEC_HASH = "org.orchestry.spec-hash"
LABEL_PORT = "org.orchestry.port"  # the container port published on 127.0.0.1 (absent for workers)
# The installation (one database) that created the container or volume. Another installation's containers
# are invisible to this one even when they carry the same cluster name; unlabelled ones (made before the
# label existed) are adopted as this installation's.
LABEL_INSTALLATION = "org.orchestry.installation"
LABEL_VOLUME = "org.orchestry.volume"  # the spec's volume name, on the Docker volumes Orchestry creates


class RuntimeFailure(Exception):
    """Base of runtime failures; `temporary` says whether retrying later can help."""

    temporary = True


class EngineUnavailable(RuntimeFailure):
    """The engine did not answer (socket missing, timeout, 5xx). Never conclude anything from it."""


class ImageUnavailable(RuntimeFailure):
    """The image is not present and could not be pulled: retrying will not help."""

    temporary = False


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for the registry an image is pulled from (`orchestry registry login`). The password is
    left out of repr and comparisons, so a logged request or a failed assertion never shows it."""

    server: str
    username: str
    password: str = field(repr=False, compare=False)

    def config(self) -> dict[str, str]:
        """Docker's AuthConfig (the X-Registry-Auth header's content)."""
        return {"username": self.username, "password": self.password, "serveraddress": self.server}


@dataclass(frozen=True)
class PullSummary:
    """What a pull fetched: the job's `pull IMAGE` step shows it."""

    image: str
    layers: int  # layers the image has
    downloaded: int  # of them, fetched now (the others were already on the host)
    bytes: int  # compressed bytes downloaded
    seconds: float
    digest: str | None = None


@dataclass(frozen=True)
class PullUpdate:
    """A pull under way, as the engine reported it so far: the job's progress steps show it."""

    image: str
    layers: int  # layers announced so far (the engine names them all once the manifest is read)
    layers_done: int  # of them, downloaded now or already on the host
    bytes_done: int  # compressed bytes downloaded so far
    bytes_total: int  # compressed size of the layers being downloaded (as far as the engine announced it)


class VolumeConflict(RuntimeFailure):
    """The volume's name is taken by a volume of another app, cluster or installation: never mounted."""

    temporary = False


class ContainerFailed(RuntimeFailure):
    """The container was created but could not start or exited at once (bad command, port clash...)."""


@dataclass(frozen=True)
class ReplicaRequest:
    """Everything needed to run one replica: the planner fills it from the normalised spec."""

    cluster: str
    app: str
    slot: int
    revision: int
    spec_hash: str
    image: str
    container_port: int | None  # published on 127.0.0.1 with an ephemeral host port; None for workers
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None  # entrypoint override
    args: tuple[str, ...] | None = None
    working_dir: str | None = None
    volumes: tuple[tuple[str, str], ...] = ()  # (docker volume name, mount path)
    nano_cpus: int | None = None
    memory_bytes: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the app's own labels, added to ours
    extra_ports: tuple[int, ...] = ()  # the app's other container ports, published on 127.0.0.1 too
    # Where it may run (the swarm runtime; the docker runtime has one host): Swarm constraints, a node label to
    # spread the app's replicas over, at most this many of the app's replicas on one node.
    constraints: tuple[str, ...] = ()
    spread: str | None = None
    max_per_node: int | None = None
    stop_grace_seconds: float | None = None  # the spec's termination.gracePeriodSeconds (a Swarm service's own)
    init: bool = False  # Docker's --init: an init process as PID 1 forwards signals and reaps children
    registry_auth: RegistryAuth | None = None  # credentials for the image's registry (Swarm passes them on)
    # Seconds a fresh container is watched for an exit at once; None: the runtime's own. A wake from zero
    # passes 0 on the docker runtime (requests are held meanwhile; one that exits fails its health check).
    settle: float | None = None

    @property
    def name(self) -> str:
        """The container's name: the app's slot, prefixed by the cluster so installations never collide."""
        return container_name(self.cluster, self.app, self.slot)


def container_name(cluster: str, app: str, slot: int) -> str:
    return f"{cluster}-{app}-{slot}"


def volume_name(cluster: str, app: str, volume: str) -> str:
    """`<cluster>_<app>_<volume>`: cluster and app names never contain `_` (DNS labels), so the name is
    unambiguous (with `-`, app `va` volume `b-data` and app `va-b` volume `data` shared one volume)."""
    return f"{cluster}_{app}_{volume}"


@dataclass(frozen=True)
class Observed:
    """One container as the engine reports it."""

    id: str
    name: str
    app: str
    slot: int
    revision: int
    spec_hash: str
    state: str  # Docker's: created, running, restarting, exited, paused, dead, removing
    host: str | None
    port: int | None
    started_at: datetime | None
    exit_code: int | None = None
    ports: tuple[tuple[int, int], ...] = ()  # (container port, published port on 127.0.0.1), every published one
    node: str | None = None  # the swarm runtime: the id of the Swarm node that runs it
    node_name: str | None = None  # and that node's host name (what users and `orchestry hosts` call it)

    def published(self, container_port: int) -> int | None:
        """The loopback port where `container_port` is reachable (health checks use it)."""
        return next((host for private, host in self.ports if private == container_port), None)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class NodeInfo:
    """One host of a Swarm (the swarm runtime), as its manager reports it."""

    id: str
    name: str  # its hostname
    address: str  # where its published ports are reached
    state: str  # Swarm's: ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    role: str  # manager, worker
    labels: dict[str, str] = field(default_factory=dict)
    leader: bool = False

    def view(self) -> HostView:
        """What the pure host decisions (workflows/hosts.py) read of it."""
        return HostView(self.name, self.address, self.state, self.availability, self.labels.get(DRAINED_LABEL))


def find_host(nodes: Iterable[NodeInfo], name: str) -> NodeInfo | None:
    """The Swarm host called `name` (its hostname or its node id), if any."""
    return next((n for n in nodes if name in (n.name, n.id)), None)


@dataclass(frozen=True)
class LogLine:
    replica: str
    timestamp: datetime
    stream: str  # stdout | stderr
    text: str


@dataclass(frozen=True)
class EngineEvent:
    action: str  # die, start, destroy, oom, kill, stop ...
    container_id: str
    name: str
    app: str
    time: datetime


class Runtime(Protocol):
    def list_replicas(self, cluster: str, app: str | None = None) -> list[Observed]:
        """Every container of the cluster (or of one app), running or not. Raises EngineUnavailable."""

    def ensure_image(
        self,
        image: str,
        auth: RegistryAuth | None = None,
        on_pull: Callable[[], None] | None = None,
        on_progress: Callable[[PullUpdate], None] | None = None,
    ) -> PullSummary | None:
        """Present locally (None), or pulled once with `auth` (`on_pull` called as the pull begins, `on_progress`
        at every progress report of the engine, from another thread), its summary returned; ImageUnavailable
        (permanent) when the registry has no such image or refuses the credentials."""

    def start_replica(self, req: ReplicaRequest) -> Observed:
        """Create and start the slot's container, or adopt the one already there for this spec hash."""

    def stop_replica(self, cluster: str, name: str, grace_seconds: float) -> None:
        """SIGTERM, SIGKILL after the grace period, then remove. A missing container is already stopped."""

    def logs(self, cluster: str, app: str, lines: int, follow: bool) -> Iterator[LogLine]:
        """The app's replicas' logs merged by time, each line with its replica's name."""

    def events(self, cluster: str, since: datetime | None) -> Iterator[EngineEvent]:
        """Container events of the cluster, blocking; ends when the stream breaks (reconnect with since)."""

    def list_volumes(self, cluster: str, app: str) -> list[str]:
        """The Docker volumes Orchestry created for the app (by label). Raises EngineUnavailable."""

    def remove_volumes(self, cluster: str, app: str) -> list[str]:
        """Remove the app's volumes; returns the names removed. A volume still in use raises VolumeConflict."""


@runtime_checkable
class HostLister(Protocol):
    """A runtime with several hosts (the swarm runtime) lists them."""

    def nodes(self) -> list[NodeInfo]:
        """The hosts as the engine reports them. Raises EngineUnavailable."""

    def drain_host(self, address: str) -> NodeInfo | None:
        """Move every task off the host at `address` (Swarm: availability drain); None when no host has that
        address. Raises EngineUnavailable."""

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        """Set the host's availability (active, pause, drain) and Orchestry's drain label (None: removed).
        ContainerFailed when no host has that name; EngineUnavailable."""

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        """Tasks of this installation the host still runs though the manager wants them stopped (a host back
        from a partition, before it has caught up). EngineUnavailable."""
