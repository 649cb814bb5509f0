"""The replica resource reader against real containers: cgroup files, and Docker's stats API as fallback."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from burn import burning

from orchestry.runtime.docker_engine import DockerEngine
from orchestry.runtime.stats import UsageReader
from orchestry.runtime.types import LABEL_CLUSTER, Observed, ReplicaRequest
from orchestry.testapp.build import TAG
from orchestry.testapp.build import ensure_image as build_testapp
from orchestry.workflows.metrics import cpu_percent, memory_percent

MiB = 1 << 20


@pytest.fixture(scope="module")
def engine(docker_required: object) -> Iterator[DockerEngine]:
    build_testapp()
    runtime = DockerEngine()
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def cluster(engine: DockerEngine) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_CLUSTER}={name}"}):
        with contextlib.suppress(docker.errors.APIError):
            c.remove(force=True)


def start(engine: DockerEngine, cluster: str, slot: int, **limits: Any) -> Observed:
    return engine.start_replica(
        ReplicaRequest(
            cluster=cluster, app="m", slot=slot, revision=1, spec_hash="h", image=TAG, container_port=8080, **limits
        )
    )


@pytest.fixture(scope="module")
def limited(engine: DockerEngine, cluster: str) -> Observed:
    """`cpu: 100m`, `memory: 64Mi`."""
    return start(engine, cluster, 1, nano_cpus=100_000_000, memory_bytes=64 * MiB)


def measure(reader: UsageReader, cid: str, seconds: float) -> tuple[float | None, float | None]:
    first = reader.read([cid]).usage[cid]
    time.sleep(seconds)
    second = reader.read([cid]).usage[cid]
    return cpu_percent(first, second), memory_percent(second, reader.host_memory())


def wait_until_answering(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.05)


def test_limits_come_from_the_cgroup_files(engine: DockerEngine, limited: Observed) -> None:
    result = UsageReader(engine, mode="cgroup").read([limited.id])
    assert result.from_cgroup == 1 and result.failed == 0
    usage = result.usage[limited.id]
    assert usage.cpu_limit == pytest.approx(0.1)
    assert usage.memory_limit == 64 * MiB
    assert 0 < usage.memory_bytes < 64 * MiB
    assert usage.cpu_usec > 0


def test_burning_drives_a_100m_replica_near_100_percent_and_idle_is_low(
    engine: DockerEngine, limited: Observed
) -> None:
    reader = UsageReader(engine, mode="cgroup")
    url = f"http://127.0.0.1:{limited.port}"
    wait_until_answering(url)
    time.sleep(0.5)
    idle, memory = measure(reader, limited.id, 2.0)
    assert idle is not None and idle < 20, idle
    assert memory is not None and 0 < memory < 100
    with burning(url) as done:
        time.sleep(1.0)  # the burn loop under way
        busy, _ = measure(reader, limited.id, 3.0)
    assert done[0] > 0
    assert busy is not None and busy > 70, busy
    assert busy < 130, busy  # a 100m quota cannot give much more than 100% of 0.1 core


def test_the_engine_fallback_agrees_with_the_files(engine: DockerEngine, limited: Observed) -> None:
    via_engine = UsageReader(engine, mode="docker").read([limited.id])
    via_files = UsageReader(engine, mode="cgroup").read([limited.id])
    assert via_engine.from_engine == 1 and via_files.from_cgroup == 1
    a, b = via_engine.usage[limited.id], via_files.usage[limited.id]
    assert (a.cpu_limit, a.memory_limit) == (b.cpu_limit, b.memory_limit) == (pytest.approx(0.1), 64 * MiB)
    assert abs(a.cpu_usec - b.cpu_usec) < 200_000  # the same counter, read a moment apart
    assert abs(a.memory_bytes - b.memory_bytes) < 8 * MiB


def test_a_replica_without_limits_is_of_one_core_and_of_the_host(engine: DockerEngine, cluster: str) -> None:
    free = start(engine, cluster, 2)
    for mode in ("cgroup", "docker"):
        reader = UsageReader(engine, mode=mode)  # type: ignore[arg-type]
        usage = reader.read([free.id]).usage[free.id]
        assert usage.cpu_limit is None
        host = reader.host_memory()
        assert host is not None
        percent = memory_percent(usage, host)
        assert percent is not None and 0 < percent < 5  # a few MiB of a host's memory


def test_gone_and_unknown_containers_are_left_out(engine: DockerEngine, cluster: str, limited: Observed) -> None:
    doomed = start(engine, cluster, 3)
    reader = UsageReader(engine)
    assert set(reader.read([limited.id, doomed.id]).usage) == {limited.id, doomed.id}
    engine.stop_replica(cluster, doomed.name, 0)
    assert reader.open_files == 6  # three counter files each, kept open between reads
    result = reader.read([limited.id, doomed.id, "0" * 64])
    assert set(result.usage) == {limited.id}
    assert result.failed == 2
    assert reader.open_files == 3  # the stopped one's files closed
    reader.read([])  # no longer asked for: closed too
    assert reader.open_files == 0
    reader.read([limited.id])
    reader.close()
    assert reader.open_files == 0
