"""DockerEngine against the real Docker engine, with the local `orchestry-testapp` image.

Every test owns a cluster name of its own (`t` + 8 hex digits), so parallel workers never see each other's
containers, and a finalizer force-removes whatever carries that cluster label.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import docker
import docker.api.image
import docker.errors
import httpx
import pytest

from orchestry.runtime.docker_engine import DockerEngine
from orchestry.runtime.types import (
    LABEL_APP,
    LABEL_CLUSTER,
    LABEL_PORT,
    LABEL_REVISION,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    ContainerFailed,
    EngineEvent,
    EngineUnavailable,
    ImageUnavailable,
    Observed,
    ReplicaRequest,
    Runtime,
)
from orchestry.testapp.build import TAG
from orchestry.testapp.build import ensure_image as build_testapp

from conftest import missing_image

# A replica that writes numbered lines to stdout and stderr, then serves HTTP as usual.
CHATTY = (
    "/bin/sh",
    "-c",
    "for i in 1 2 3; do echo out-$i; usleep 20000; echo err-$i >&2; usleep 20000; done;"
    " exec /bin/sh /app/entrypoint.sh",
)
# A replica that writes a line every 50 ms and stops at once on SIGTERM.
TICKER = ("/bin/sh", "-c", "trap 'exit 0' TERM; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.05 & wait; done")


@pytest.fixture(scope="module")
def client(docker_required: object) -> Iterator[docker.DockerClient]:
    raw = docker.from_env()
    build_testapp()
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def engine(client: docker.DockerClient) -> Iterator[DockerEngine]:
    runtime = DockerEngine()
    yield runtime
    runtime.close()


def test_docker_engine_is_a_runtime() -> None:
    runtime: Runtime = DockerEngine()  # checked by mypy; creating it touches no engine
    assert isinstance(runtime, DockerEngine)


def _remove_cluster(client: docker.DockerClient, cluster: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


@pytest.fixture
def cluster(client: docker.DockerClient) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    _remove_cluster(client, name)


def request(cluster: str, app: str = "web", slot: int = 0, **changes: object) -> ReplicaRequest:
    base = ReplicaRequest(
        cluster=cluster,
        app=app,
        slot=slot,
        revision=1,
        spec_hash="hash-1",
        image=TAG,
        container_port=8080,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def wait_http(url: str, seconds: float = 10) -> httpx.Response:
    """The published port accepts at once; the server inside needs a moment."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {seconds} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared(client: docker.DockerClient, engine: DockerEngine) -> Iterator[tuple[ReplicaRequest, Observed]]:
    """One started replica for the tests that only look at it."""
    cluster = f"t{uuid.uuid4().hex[:8]}"
    req = request(
        cluster,
        revision=3,
        spec_hash="abc123",
        env={"INSTANCE_ID": "web-0", "INSTANCE_COLOR": "blue"},
        nano_cpus=500_000_000,
        memory_bytes=64 * 1024 * 1024,
        labels={"team": "payments", LABEL_CLUSTER: "spoofed"},
    )
    try:
        yield req, engine.start_replica(req)
    finally:
        _remove_cluster(client, cluster)


# -- start -------------------------------------------------------------------------------------------------------


def test_started_replica_runs_and_answers_on_loopback(shared: tuple[ReplicaRequest, Observed]) -> None:
    req, observed = shared
    assert observed.running
    assert (observed.name, observed.app, observed.slot, observed.revision) == (req.name, "web", 0, 3)
    assert observed.spec_hash == "abc123"
    assert observed.host == "127.0.0.1" and observed.port
    assert observed.started_at is not None and observed.started_at.tzinfo is not None
    assert wait_http(f"http://127.0.0.1:{observed.port}/health").text == "ok\n"


def test_started_replica_carries_labels_env_limits_and_no_restart_policy(
    client: docker.DockerClient, shared: tuple[ReplicaRequest, Observed]
) -> None:
    req, observed = shared
    attrs = client.api.inspect_container(observed.id)
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_CLUSTER] == req.cluster  # the app's own labels cannot pose as ours
    assert (labels[LABEL_APP], labels[LABEL_SLOT], labels[LABEL_REVISION]) == ("web", "0", "3")
    assert (labels[LABEL_SPEC_HASH], labels[LABEL_PORT], labels["team"]) == ("abc123", "8080", "payments")
    host_config = attrs["HostConfig"]
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["RestartPolicy"]["Name"] == "no"
    assert host_config["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    env = wait_http(f"http://127.0.0.1:{observed.port}/env").text.splitlines()
    assert "INSTANCE_ID=web-0" in env and "INSTANCE_COLOR=blue" in env


def test_the_engine_that_started_a_replica_lists_its_precise_start_time(
    engine: DockerEngine, shared: tuple[ReplicaRequest, Observed]
) -> None:
    """Docker's list gives whole seconds; the health check's initial delay counts from this time."""
    req, observed = shared
    (listed,) = engine.list_replicas(req.cluster)
    assert listed.started_at == observed.started_at  # the inspected StartedAt, to the microsecond
    other = DockerEngine()  # another node (after a failover) knows only the list's time
    try:
        (elsewhere,) = other.list_replicas(req.cluster)
    finally:
        other.close()
    assert elsewhere.started_at is not None and observed.started_at is not None
    assert elsewhere.started_at.microsecond == 0
    assert timedelta(0) <= observed.started_at - elsewhere.started_at < timedelta(seconds=2)


def test_starting_again_adopts_the_running_container(
    engine: DockerEngine, shared: tuple[ReplicaRequest, Observed]
) -> None:
    req, observed = shared
    again = engine.start_replica(req)
    assert again.id == observed.id and again.port == observed.port


def test_a_container_only_created_by_an_earlier_term_is_started_not_duplicated(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    """An earlier term created the slot's container and lost its fence before starting it: the next start
    of that slot starts that container, not a second one (a "job run twice with effect" in bench/chaos)."""
    from orchestry.runtime.docker_engine import _create_args

    req = request(cluster)
    left = client.containers.create(**_create_args(req))
    assert engine.list_replicas(cluster)[0].state == "created"
    started = engine.start_replica(req)
    assert started.id == left.id and started.running
    assert [(o.id, o.state) for o in engine.list_replicas(cluster)] == [(left.id, "running")]
    wait_http(f"http://127.0.0.1:{started.port}/")


def test_another_spec_hash_replaces_the_container(engine: DockerEngine, cluster: str) -> None:
    first = engine.start_replica(request(cluster))
    second = engine.start_replica(request(cluster, spec_hash="hash-2", revision=2))
    assert second.id != first.id and second.running
    assert [(o.id, o.spec_hash, o.revision) for o in engine.list_replicas(cluster)] == [(second.id, "hash-2", 2)]


def test_an_exited_container_of_the_same_spec_is_replaced(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    first = engine.start_replica(request(cluster))
    client.api.kill(first.id)
    second = engine.start_replica(request(cluster))
    assert second.id != first.id and second.running


def test_concurrent_starts_of_one_slot_end_with_one_container(engine: DockerEngine, cluster: str) -> None:
    req = request(cluster)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: engine.start_replica(req), range(4)))
    assert len({o.id for o in results}) == 1
    assert [o.id for o in engine.list_replicas(cluster)] == [results[0].id]


def test_a_command_that_exits_at_once_fails_and_leaves_nothing(engine: DockerEngine, cluster: str) -> None:
    with pytest.raises(ContainerFailed, match=r"exited at once with code 1"):
        engine.start_replica(request(cluster, command=("/bin/false",)))
    with pytest.raises(ContainerFailed, match=r"last output: boom"):
        engine.start_replica(request(cluster, slot=1, command=("/bin/sh", "-c", "echo boom >&2; exit 3")))
    with pytest.raises(ContainerFailed, match=r"could not start"):
        engine.start_replica(request(cluster, slot=2, command=("/no/such/binary",)))
    assert engine.list_replicas(cluster) == []


def test_a_missing_image_is_unavailable_quickly(engine: DockerEngine, cluster: str) -> None:
    image = missing_image(f"orchestry-missing-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    with pytest.raises(ImageUnavailable) as caught:
        engine.ensure_image(image)
    assert time.monotonic() - started < 10
    # Its registry refuses the connection: the engine's reason follows.
    assert str(caught.value).startswith(f"image {image}"), caught.value
    assert caught.value.temporary is False
    with pytest.raises(ImageUnavailable):
        engine.start_replica(request(cluster, image=image))
    assert engine.list_replicas(cluster) == []


def test_a_present_image_is_ensured(engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local image is found without a pull (a pull would go to a registry these machines do not have)."""
    pulls: list[str] = []
    real_pull = docker.api.image.ImageApiMixin.pull

    def pull(self: docker.api.image.ImageApiMixin, repository: str, *args: object, **kwargs: object) -> object:
        pulls.append(repository)
        return real_pull(self, repository, *args, **kwargs)

    monkeypatch.setattr(docker.api.image.ImageApiMixin, "pull", pull)
    engine.ensure_image(TAG)  # returns: no ImageUnavailable, no EngineUnavailable
    assert pulls == []
    # Positive control: an image that is not there is pulled (and, with no registry, unavailable).
    missing = missing_image(f"orchestry-missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ImageUnavailable):
        engine.ensure_image(missing)
    assert pulls == [missing.rsplit(":", 1)[0]]


# -- list -------------------------------------------------------------------------------------------------------


def test_list_replicas_by_cluster_and_by_app(client: docker.DockerClient, engine: DockerEngine, cluster: str) -> None:
    other = f"t{uuid.uuid4().hex[:8]}"
    try:
        web0 = engine.start_replica(request(cluster, slot=0, revision=4, spec_hash="h4"))
        web1 = engine.start_replica(request(cluster, slot=1, revision=4, spec_hash="h4"))
        worker = engine.start_replica(request(cluster, app="worker", container_port=None))
        engine.start_replica(request(other))
        client.api.kill(web1.id)

        everything = engine.list_replicas(cluster)
        assert [(o.app, o.slot) for o in everything] == [("web", 0), ("web", 1), ("worker", 0)]
        by_id = {o.id: o for o in everything}
        assert by_id[web0.id] == replace(web0, started_at=by_id[web0.id].started_at)
        assert by_id[web0.id].started_at is not None
        assert (by_id[web0.id].revision, by_id[web0.id].spec_hash) == (4, "h4")
        assert (by_id[web1.id].state, by_id[web1.id].exit_code, by_id[web1.id].port) == ("exited", 137, None)
        assert (by_id[worker.id].running, by_id[worker.id].host, by_id[worker.id].port) == (True, None, None)

        assert [o.id for o in engine.list_replicas(cluster, "web")] == [web0.id, web1.id]
        assert engine.list_replicas(cluster, "nothing") == []
        assert cluster not in {o.name.split("-")[0] for o in engine.list_replicas(other)}
    finally:
        _remove_cluster(client, other)


def test_a_container_with_malformed_labels_is_listed_with_slot_minus_one(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    client.containers.create(
        TAG, name=f"{cluster}-odd", labels={LABEL_CLUSTER: cluster, LABEL_APP: "web", LABEL_SLOT: "x"}
    )
    [odd] = engine.list_replicas(cluster)
    assert (odd.name, odd.slot, odd.revision, odd.state) == (f"{cluster}-odd", -1, -1, "created")


# -- stop -------------------------------------------------------------------------------------------------------


def test_stop_removes_and_a_second_stop_is_harmless(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    observed = engine.start_replica(request(cluster))
    started = time.monotonic()
    engine.stop_replica(cluster, observed.name, grace_seconds=10)
    assert time.monotonic() - started < 5  # the test app leaves at once on SIGTERM
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container(observed.id)
    engine.stop_replica(cluster, observed.name, grace_seconds=10)
    assert engine.list_replicas(cluster) == []


def test_stop_kills_after_the_grace_period(engine: DockerEngine, cluster: str) -> None:
    # A signal ignored on entry stays ignored in the shell the entrypoint execs: SIGTERM does nothing.
    stubborn = ("/bin/sh", "-c", "trap '' TERM; exec /bin/sh /app/entrypoint.sh")
    observed = engine.start_replica(request(cluster, command=stubborn))
    started = time.monotonic()
    engine.stop_replica(cluster, observed.name, grace_seconds=0.3)  # rounded up to 1 s
    assert 0.9 < time.monotonic() - started < 5
    assert engine.list_replicas(cluster) == []


def test_a_foreign_container_with_our_name_is_never_touched(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    foreign = client.containers.run(TAG, name=f"{cluster}-web-0", detach=True)
    try:
        with pytest.raises(ContainerFailed, match=rf"name {cluster}-web-0 is taken by a container Orchestry does"):
            engine.start_replica(request(cluster))
        with pytest.raises(ContainerFailed, match="refusing to stop"):
            engine.stop_replica(cluster, f"{cluster}-web-0", grace_seconds=1)
        foreign.reload()
        assert foreign.status == "running"
        assert engine.list_replicas(cluster) == []
    finally:
        foreign.remove(force=True)


def test_another_clusters_container_is_not_stopped(
    client: docker.DockerClient, engine: DockerEngine, cluster: str
) -> None:
    observed = engine.start_replica(request(cluster))
    with pytest.raises(ContainerFailed):
        engine.stop_replica("someone-else", observed.name, grace_seconds=1)
    assert client.api.inspect_container(observed.id)["State"]["Running"]


# -- an engine that does not answer ------------------------------------------------------------------------------


def _all_calls(engine: DockerEngine) -> list[Callable[[], object]]:
    return [
        lambda: engine.list_replicas("c"),
        lambda: engine.ensure_image(TAG),
        lambda: engine.start_replica(request("c")),
        lambda: engine.stop_replica("c", "c-web-0", 1),
        lambda: engine.logs("c", "web", 10, False),
        lambda: engine.logs("c", "web", 10, True),
        lambda: engine.events("c", None),
    ]


# The SDK's unix-socket connect() does not close its socket when connecting fails (docker 7.1/7.2): the socket
# waits for garbage collection, which warns. Collect it here rather than in whichever test runs next.
sdk_leaks_a_socket_per_failed_connect = pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)


@sdk_leaks_a_socket_per_failed_connect
def test_an_unreachable_engine_is_engine_unavailable() -> None:
    # version= only because there is no engine to ask for it; Orchestry never pins it.
    unreachable = DockerEngine(docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41", timeout=2))
    for call in _all_calls(unreachable):
        with pytest.raises(EngineUnavailable, match="unreachable"):
            call()
    gc.collect()


@sdk_leaks_a_socket_per_failed_connect
def test_an_engine_down_at_first_use_is_engine_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    lazy = DockerEngine()
    for call in _all_calls(lazy):
        with pytest.raises(EngineUnavailable) as caught:
            call()
        assert "\n" not in str(caught.value)
    del caught  # its traceback holds the leaked socket
    gc.collect()


# -- logs -------------------------------------------------------------------------------------------------------


def test_logs_of_two_replicas_are_merged_by_time(engine: DockerEngine, cluster: str) -> None:
    names = [engine.start_replica(request(cluster, slot=slot, command=CHATTY)).name for slot in (0, 1)]
    lines = list(engine.logs(cluster, "web", 3, follow=False))
    assert len(lines) == 6
    assert {line.replica for line in lines} == set(names)
    assert [line.timestamp for line in lines] == sorted(line.timestamp for line in lines)
    for name in names:
        own = [(line.stream, line.text) for line in lines if line.replica == name]
        # the last three lines of the replica: err-3 and the server's own line on stderr, out-3 on stdout
        assert ("stdout", "out-3") in own and ("stderr", "err-3") in own
        assert ("stderr", "orchestry-testapp listening on port 8080") in own
    everything = list(engine.logs(cluster, "web", 100, follow=False))
    assert sorted(line.text for line in everything if line.replica == names[0] and line.stream == "stdout") == [
        "out-1",
        "out-2",
        "out-3",
    ]
    assert list(engine.logs(cluster, "web", 0, follow=False)) == []
    engine.logs(cluster, "web", 1, follow=False).close()  # type: ignore[attr-defined]


def _reader_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("orchestry-logs-")]


def test_follow_yields_new_lines_and_stops_when_closed(engine: DockerEngine, cluster: str) -> None:
    before = len(_reader_threads())
    observed = engine.start_replica(request(cluster, command=TICKER, container_port=None))
    follow = engine.logs(cluster, "web", 1, follow=True)
    seen = [next(follow) for _ in range(5)]
    assert all(line.replica == observed.name and line.stream == "stdout" for line in seen)
    numbers = [int(line.text.removeprefix("tick-")) for line in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 5))  # one tail line, then new ones in order
    started = time.monotonic()
    follow.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 1
    assert len(_reader_threads()) == before
    assert list(follow) == []


def test_follow_can_be_closed_from_another_thread_while_blocked(engine: DockerEngine, cluster: str) -> None:
    engine.start_replica(request(cluster))  # quiet after its first line
    follow = engine.logs(cluster, "web", 0, follow=True)
    got: queue.Queue[object] = queue.Queue()
    consumer = threading.Thread(target=lambda: got.put(list(follow)))
    consumer.start()
    time.sleep(0.2)
    follow.close()  # type: ignore[attr-defined]
    consumer.join(timeout=2)
    assert not consumer.is_alive() and got.get_nowait() == []


def test_follow_ends_when_the_replicas_stop(engine: DockerEngine, cluster: str) -> None:
    observed = engine.start_replica(request(cluster, command=TICKER, container_port=None))
    follow = engine.logs(cluster, "web", 0, follow=True)
    next(follow)
    engine.stop_replica(cluster, observed.name, grace_seconds=5)
    drain = threading.Thread(target=lambda: list(follow), daemon=True)
    drain.start()
    drain.join(timeout=5)
    try:
        assert not drain.is_alive(), "the follow did not end after its replica was removed"
    finally:
        follow.close()  # type: ignore[attr-defined]


# -- events -----------------------------------------------------------------------------------------------------


def test_a_killed_replica_gives_a_die_event(client: docker.DockerClient, engine: DockerEngine, cluster: str) -> None:
    observed = engine.start_replica(request(cluster))
    stream = engine.events(cluster, since=datetime.now(UTC) - timedelta(seconds=1))
    received: queue.Queue[EngineEvent | None] = queue.Queue()

    def read() -> None:
        for event in stream:
            received.put(event)
        received.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = time.monotonic()
    client.api.kill(observed.id)
    while True:
        event = received.get(timeout=max(0.01, killed + 2 - time.monotonic()))
        assert event is not None, "the event stream ended"
        assert event.name == observed.name and event.app == "web"  # the label filter keeps others out
        if event.action == "die":
            break
    assert time.monotonic() - killed < 2
    assert event.container_id == observed.id and event.time.tzinfo is not None
    stream.close()  # from another thread than the reader's
    reader.join(timeout=2)
    assert not reader.is_alive()
