"""Two installations (two databases) on one Docker engine never touch each other's containers, and volumes
are named per app without collisions (issue 11, "Data"). Real Docker, real `orchestry serve` processes."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestry.runtime.docker_engine import DockerEngine
from orchestry.runtime.types import LABEL_APP, LABEL_CLUSTER, LABEL_INSTALLATION
from orchestry.testapp.ports import free_port

from conftest import (
    LiveServer,
    docker_client,
    hello,
    orchestry_cmd,
    post,
    start_server,
    stop_server,
    wait_for,
)


def _up(server: LiveServer, app: str, extra: str = "") -> None:
    resp = post(server, hello(app, extra=extra))
    assert resp.status_code == 201, resp.text
    job = server.http.post(f"/api/v1/apps/{app}/up", json={"replicas": 1}).json()["job"]
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done


def _cleanup_volumes(cluster: str) -> None:
    api = docker_client().api
    for volume in api.volumes(filters={"label": f"{LABEL_CLUSTER}={cluster}"}).get("Volumes") or []:
        with contextlib.suppress(Exception):
            api.remove_volume(volume["Name"], force=True)


@pytest.fixture
def pair(tmp_path: Path, empty_db_url: str, databases: Any, testapp_image: str) -> Iterator[dict[str, Any]]:
    """Two empty databases (each gets its own installation id when `serve` migrates it), one cluster name."""
    cluster = "inst" + uuid.uuid4().hex[:8]
    state: dict[str, Any] = {"cluster": cluster, "servers": [], "dbs": [empty_db_url, databases.empty()]}
    yield state
    for server in state["servers"]:
        stop_server(server)
    for box in docker_client().api.containers(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}):
        with contextlib.suppress(Exception):
            docker_client().api.remove_container(box["Id"], force=True)
    _cleanup_volumes(cluster)


def _start(pair: dict[str, Any], index: int, tmp_path: Path) -> LiveServer:
    workdir = tmp_path / f"node{index}"
    workdir.mkdir()
    server = start_server(pair["dbs"][index], workdir, {"ORCHESTRY_CLUSTER_NAME": pair["cluster"]})
    pair["servers"].append(server)
    return server


def test_a_second_installation_refuses_to_start_and_stops_nothing(pair: dict[str, Any], tmp_path: Path) -> None:
    first = _start(pair, 0, tmp_path)
    _up(first, "web")
    (box,) = first.containers("web")
    assert box.labels[LABEL_INSTALLATION]

    workdir = tmp_path / "second"
    workdir.mkdir()
    env = {**first.env, "ORCHESTRY_DATABASE_URL": pair["dbs"][1], "ORCHESTRY_DATA_DIR": str(workdir)}
    env["ORCHESTRY_NODE_ID"] = "second"
    out = subprocess.run(
        orchestry_cmd("serve", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "another Orchestry installation" in out.stderr and box.name in out.stderr

    after = first.containers("web")
    assert [(b.id, b.status) for b in after] == [(box.id, "running")]


def test_installations_started_together_leave_each_others_containers_alone(
    pair: dict[str, Any], tmp_path: Path
) -> None:
    """Both start before either has containers (so neither refuses); then each runs an app of the same name."""
    first, second = _start(pair, 0, tmp_path), _start(pair, 1, tmp_path)
    _up(first, "web")
    (mine,) = first.containers("web")
    time.sleep(12)  # longer than a reconcile period (10 s): the second sees the container, owns no app "web"
    assert [(b.id, b.status) for b in first.containers("web")] == [(mine.id, "running")]
    # The second cannot take the slot's name either: its start fails; the first's container is untouched.
    resp = post(second, hello("web"))
    assert resp.status_code == 201
    job = second.http.post("/api/v1/apps/web/up", json={"replicas": 1}).json()["job"]
    time.sleep(3)
    assert [(b.id, b.status) for b in first.containers("web")] == [(mine.id, "running")]
    assert "belongs to installation" in str(second.http.get(f"/api/v1/jobs/{job['id']}").json())


def test_unlabelled_containers_of_the_cluster_are_adopted_and_foreign_ones_ignored(testapp_image: str) -> None:
    cluster = "adopt" + uuid.uuid4().hex[:8]
    api = docker_client().api
    made = []
    try:
        for slot, extra in ((1, {}), (2, {LABEL_INSTALLATION: "other"}), (3, {LABEL_INSTALLATION: "mine"})):
            labels = {LABEL_CLUSTER: cluster, LABEL_APP: "web", "org.orchestry.slot": str(slot), **extra}
            made.append(api.create_container(testapp_image, name=f"{cluster}-web-{slot}", labels=labels)["Id"])
        engine = DockerEngine(installation="mine")
        assert [o.slot for o in engine.list_replicas(cluster)] == [1, 3]  # legacy (unlabelled) and ours
        assert engine.foreign_containers(cluster) == [f"{cluster}-web-2"]
        with pytest.raises(Exception, match="belongs to installation other"):
            engine.stop_replica(cluster, f"{cluster}-web-2", 0)
        assert api.inspect_container(made[1])["Id"] == made[1]
        engine.close()
    finally:
        for cid in made:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)


VOLUME = "  volumes:\n    - name: {vol}\n      mountPath: /data\n"


def test_volumes_do_not_collide_and_are_kept_or_removed_on_delete(pair: dict[str, Any], tmp_path: Path) -> None:
    server = _start(pair, 0, tmp_path)
    cluster = pair["cluster"]
    _up(server, "va", VOLUME.format(vol="b-data"))
    _up(server, "va-b", VOLUME.format(vol="data"))
    api = docker_client().api

    def volumes() -> dict[str, dict[str, str]]:
        found = api.volumes(filters={"label": f"{LABEL_CLUSTER}={cluster}"}).get("Volumes") or []
        return {v["Name"]: v["Labels"] for v in found}

    assert set(volumes()) == {f"{cluster}_va_b-data", f"{cluster}_va-b_data"}
    mounts = {b.name: [m["Name"] for m in b.inspect()["Mounts"]] for b in server.containers()}
    assert mounts == {f"{cluster}-va-1": [f"{cluster}_va_b-data"], f"{cluster}-va-b-1": [f"{cluster}_va-b_data"]}
    assert {labels[LABEL_APP] for labels in volumes().values()} == {"va", "va-b"}

    kept = server.wait_job(server.http.delete("/api/v1/apps/va").json()["job"]["id"])
    assert kept["status"] == "succeeded", kept
    assert kept["result"]["volumes_kept"] == [f"{cluster}_va_b-data"]
    (event,) = [e for e in server.http.get("/api/v1/apps/va/events").json()["events"] if e["type"] == "app.deleted"]
    assert f"volumes kept: {cluster}_va_b-data" in event["message"]

    removed = server.wait_job(server.http.delete("/api/v1/apps/va-b", params={"volumes": "1"}).json()["job"]["id"])
    assert removed["status"] == "succeeded", removed
    assert removed["result"]["volumes_removed"] == [f"{cluster}_va-b_data"]
    assert wait_for(lambda: set(volumes()) == {f"{cluster}_va_b-data"}, 5) is not None
    assert set(volumes()) == {f"{cluster}_va_b-data"}


def test_a_volume_of_that_name_owned_by_someone_else_is_never_mounted(testapp_image: str) -> None:
    from orchestry.runtime.types import ReplicaRequest, VolumeConflict

    cluster = "vol" + uuid.uuid4().hex[:8]
    api = docker_client().api
    name = f"{cluster}_web_data"
    api.create_volume(name, labels={LABEL_CLUSTER: cluster, LABEL_APP: "web", LABEL_INSTALLATION: "other"})
    engine = DockerEngine(installation="mine")
    req = ReplicaRequest(
        cluster=cluster,
        app="web",
        slot=1,
        revision=1,
        spec_hash="h",
        image=testapp_image,
        container_port=8080,
        volumes=((name, "/data"),),
    )
    try:
        with pytest.raises(VolumeConflict, match="is not app web's"):
            engine.start_replica(req)
        assert engine.list_replicas(cluster) == []
    finally:
        engine.close()
        for box in api.containers(all=True, filters={"label": f"{LABEL_CLUSTER}={cluster}"}):
            api.remove_container(box["Id"], force=True)
        _cleanup_volumes(cluster)
