"""`POST /api/v1/hosts/<name>/drain|activate` and the host gauges, against a fake swarm runtime: what is refused
(with the field named), what is queued, and what /metrics says per host. The real swarm: tests/test_swarm.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeRuntime

from orchestry.config import load_settings
from orchestry.models.db import make_engine
from orchestry.runtime.types import NodeInfo
from orchestry.web.app import create_app


class FakeSwarm(FakeRuntime):  # type: ignore[misc]  # tests/fakes.py is not in the package mypy reads
    """A runtime with hosts: what the API reads of it (no job runs here)."""

    def __init__(self, hosts: list[NodeInfo]) -> None:
        super().__init__()
        self.hosts = hosts

    def nodes(self) -> list[NodeInfo]:
        return self.hosts

    def drain_host(self, address: str) -> NodeInfo | None:
        raise AssertionError("the API never drains a host itself")

    def set_availability(self, name: str, availability: str, drained_for: str | None) -> NodeInfo:
        raise AssertionError("the API never changes a host itself")

    def stale_tasks(self, cluster: str, node_id: str) -> list[str]:
        return []


def host(name: str, availability: str = "active", state: str = "ready") -> NodeInfo:
    return NodeInfo(f"id-{name}", name, f"10.0.0.{name[-1]}", state, availability, "worker")


def client(db_url: str, tmp_path: Path, hosts: list[NodeInfo], runtime: str = "swarm") -> Any:
    settings = load_settings({"database_url": db_url, "node_id": "n1", "data_dir": str(tmp_path), "runtime": runtime})
    return create_app(settings, make_engine(db_url), runtime=FakeSwarm(hosts)).test_client()


def error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()
    assert {"error", "detail"} <= set(body)
    return body


def test_drain_and_activate_queue_jobs_under_the_hosts_lock(db_url: str, tmp_path: Path) -> None:
    api = client(db_url, tmp_path, [host("h1"), host("h2")])
    drained = api.post("/api/v1/hosts/h2/drain")
    assert drained.status_code == 202, drained.get_data(as_text=True)
    job = drained.get_json()["job"]
    assert job["kind"] == "host-drain" and job["args"] == {"host": "h2", "why": "requested"}, job
    again = api.post("/api/v1/hosts/id-h2/drain")  # by node id: the same host, the waiting job joined
    assert again.status_code == 202 and again.get_json()["job"]["id"] == job["id"]
    activated = api.post("/api/v1/hosts/h2/activate")
    assert activated.status_code == 202 and activated.get_json()["job"]["kind"] == "host-activate"


@pytest.mark.parametrize(
    ("path", "status", "rule"),
    [
        ("/api/v1/hosts/nope/drain", 404, "no Swarm host has it"),
        ("/api/v1/hosts/nope/activate", 404, "no Swarm host has it"),
        ("/api/v1/hosts/-bad/drain", 422, "must be a host's name"),
        ("/api/v1/hosts/h1/drain", 422, "last active host"),  # h2 is drained already: nowhere to go
    ],
)
def test_bad_requests_name_the_field(db_url: str, tmp_path: Path, path: str, status: int, rule: str) -> None:
    api = client(db_url, tmp_path, [host("h1"), host("h2", "drain")])
    body = error(api.post(path), status)
    assert body["fields"][0]["field"] == "name" and rule in body["fields"][0]["rule"], body


def test_the_docker_runtime_has_no_hosts_to_change(db_url: str, tmp_path: Path) -> None:
    api = client(db_url, tmp_path, [host("h1")], runtime="docker")
    assert error(api.post("/api/v1/hosts/h1/drain"), 409)["error"] == "not_swarm"


def test_the_host_gauges(db_url: str, tmp_path: Path) -> None:
    api = client(db_url, tmp_path, [host("h1"), host("h2", "drain", "down")])
    text = api.get("/metrics").get_data(as_text=True)
    for line in (
        'orchestry_host_up{host="h1"} 1.0',
        'orchestry_host_up{host="h2"} 0.0',
        'orchestry_host_available{host="h1"} 1.0',
        'orchestry_host_available{host="h2"} 0.0',
        'orchestry_host_replicas{host="h1"} 0.0',
        'orchestry_host_healthy_replicas{host="h2"} 0.0',
    ):
        assert line in text, line
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docker = client(db_url, tmp_path, [host("h1")], runtime="docker").get("/metrics").get_data(as_text=True)
    assert "orchestry_host_up" not in docker
