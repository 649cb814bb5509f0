"""Apps on the real Docker engine through a real controller: up, scale, down, delete, self-healing."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from orchestry.models.db import make_engine

from conftest import (
    Box,
    Databases,
    LiveServer,
    assert_error,
    docker_client,
    hello,
    missing_image,
    post,
    start_server,
    stop_server,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("testapp_image")


def act(live: LiveServer, name: str, op: str, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    resp = live.http.post(f"/api/v1/apps/{name}/{op}", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()


def run(live: LiveServer, name: str, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    job = live.wait_job(act(live, name, op, body)["job"]["id"])
    assert job["status"] == "succeeded", job
    return job


def running(live: LiveServer, app: str) -> list[Box]:
    return [c for c in live.containers(app) if c.status == "running"]


def serving(container: Box) -> str:
    resp = httpx.get(f"http://127.0.0.1:{container.port}/", timeout=5)
    assert resp.status_code == 200
    return resp.text


def test_up_scale_down_delete(live: LiveServer) -> None:
    post(live, hello("web", extra="scaling:\n  maxReplicas: 6\n"))
    job = run(live, "web", "up", {"replicas": 3})
    assert sorted(s["step"] for s in job["steps"]) == [f"start {live.cluster}-web-{i}" for i in (1, 2, 3)]
    containers = running(live, "web")
    assert sorted(c.name for c in containers) == [f"{live.cluster}-web-{i}" for i in (1, 2, 3)]
    for c in containers:
        assert "hostname=" in serving(c)
        assert c.labels["org.orchestry.app"] == "web"
        assert c.inspect()["HostConfig"]["RestartPolicy"]["Name"] == "no"
    app = live.http.get("/api/v1/apps/web").json()
    assert (app["status"], app["desired_replicas"], app["replica_count"]) == ("running", 3, 3)
    assert {r["address"].split(":")[0] for r in app["replicas"]} == {"127.0.0.1"}
    assert all(r["container_id"] and r["state"] == "running" and r["revision"] == 1 for r in app["replicas"])

    run(live, "web", "scale", {"replicas": 5})
    assert len(running(live, "web")) == 5
    run(live, "web", "scale", {"replicas": 2})
    assert sorted(c.name for c in live.containers("web")) == [f"{live.cluster}-web-1", f"{live.cluster}-web-2"]

    run(live, "web", "down")
    assert live.containers("web") == []
    assert live.http.get("/api/v1/apps/web").json()["status"] == "stopped"

    run(live, "web", "up", {"replicas": 1})
    resp = live.http.delete("/api/v1/apps/web")
    assert live.wait_job(resp.json()["job"]["id"])["status"] == "succeeded"
    assert live.containers("web") == []
    assert live.http.get("/api/v1/apps/web").status_code == 404
    types = [e["type"] for e in live.http.get("/api/v1/apps/web/events").json()["events"]]
    assert types[0] == "app.deleted" and "app.created" in types and "app.scale" in types


def test_killed_replicas_are_replaced(live: LiveServer) -> None:
    post(live, hello("heal"))
    run(live, "heal", "up", {"replicas": 2})
    victim = running(live, "heal")[0]
    victim.kill()
    took = wait_for(
        lambda: len(running(live, "heal")) == 2 and victim.id not in {c.id for c in running(live, "heal")}, timeout=10
    )
    assert took < 2.0, f"replaced after {took:.2f}s"

    for c in live.containers("heal"):
        c.remove()
    wait_for(lambda: len(running(live, "heal")) == 2, timeout=15)
    names = sorted(c.name for c in running(live, "heal"))
    assert names == [f"{live.cluster}-heal-1", f"{live.cluster}-heal-2"]


def test_idempotency_key_and_duplicate_runs(live: LiveServer) -> None:
    post(live, hello("idem"))
    first = act(live, "idem", "up", {"replicas": 2}, **{"Idempotency-Key": "abc-1"})
    second = act(live, "idem", "up", {"replicas": 2}, **{"Idempotency-Key": "abc-1"})
    assert first["job"]["id"] == second["job"]["id"] and second["created"] is False
    assert live.wait_job(first["job"]["id"])["status"] == "succeeded"
    ids = {c.id for c in live.containers("idem")}
    # The same operation again changes nothing: the handler observes that all is in place.
    again = run(live, "idem", "up", {"replicas": 2})
    assert again["steps"] == [] and {c.id for c in live.containers("idem")} == ids
    jobs = live.http.get("/api/v1/jobs", params={"app": "idem"}).json()["jobs"]
    assert len(jobs) == 2


def test_missing_image_fails_fast_without_retries(databases: Databases, tmp_path: Path) -> None:
    # Its own controller with a reconcile sweep every 0.2 s, so "no job within 1.5 s" spans several sweeps.
    live = start_server(databases.migrated(), tmp_path, extra_env={"ORCHESTRY_RECONCILE_SECONDS": "0.2"})
    try:
        post(live, hello("ghost", image=missing_image()))
        started = time.monotonic()
        job = live.wait_job(act(live, "ghost", "up")["job"]["id"], timeout=30)
        assert time.monotonic() - started < 30
        assert job["status"] == "failed"
        # The engine's reason follows (its registry refuses the connection).
        prefix = f"image {missing_image()} is not available locally and could not be pulled: "
        assert job["error"].startswith(prefix), job
        # Never retried; an attempt handed back when the lease ran out (a loaded machine) is not a retry.
        outcomes = [entry["outcome"] for entry in job["history"]]
        assert "retry" not in outcomes and job["attempts"] == 1 + outcomes.count("abandoned"), job
        app = live.http.get("/api/v1/apps/ghost").json()
        assert app["status"] == "failed" and job["error"] in app["status_reason"]
        time.sleep(1.5)  # no retry storm: the reconcile sweep leaves failed apps to the user
        assert len(live.http.get("/api/v1/jobs", params={"app": "ghost"}).json()["jobs"]) == 1
        assert live.containers("ghost") == []
        # Positive control: the same app, no longer failed, is drift that the sweep picks up within that time.
        engine = make_engine(live.db_url)
        with engine.begin() as conn:
            conn.execute(text("UPDATE apps SET status = 'running' WHERE name = 'ghost'"))
        engine.dispose()
        wait_for(lambda: len(live.http.get("/api/v1/jobs", params={"app": "ghost"}).json()["jobs"]) > 1, timeout=1.5)
    finally:
        stop_server(live)


def test_bad_operations_enqueue_nothing(live: LiveServer) -> None:
    post(live, hello("strict", extra="scaling:\n  maxReplicas: 3\n"))
    cases = [
        ("strict", "scale", {"replicas": 4}, 422, "replicas"),
        ("strict", "scale", {"replicas": -1}, 422, "replicas"),
        ("strict", "scale", {"replicas": 0}, 422, "replicas"),  # below minReplicas (1)
        ("strict", "scale", {"replicas": "2"}, 422, "replicas"),
        ("strict", "scale", {"replicas": True}, 422, "replicas"),
        ("strict", "scale", {"replicas": 1.5}, 422, "replicas"),
        ("strict", "scale", {}, 422, "replicas"),
        ("strict", "scale", None, 422, "<body>"),
        ("strict", "scale", {"replicas": 1, "extra": 1}, 422, "extra"),
        ("strict", "up", {"replicas": 0}, 422, "replicas"),
        ("nope", "up", None, 404, None),
        ("nope", "scale", {"replicas": 1}, 404, None),
    ]
    for name, op, body, status, fld in cases:
        err = assert_error(live.http.post(f"/api/v1/apps/{name}/{op}", json=body), status)
        if fld:
            assert fld in [f["field"] for f in err["fields"]], (op, body, err)
    assert_error(
        live.http.post("/api/v1/apps/strict/scale", content="{", headers={"Content-Type": "application/json"}),
        400,
        "malformed_json",
    )
    assert_error(
        live.http.post(
            "/api/v1/apps/strict/scale", content="replicas: 1", headers={"Content-Type": "application/yaml"}
        ),
        415,
    )
    assert live.http.get("/api/v1/jobs").json()["jobs"] == []
    run(live, "strict", "down")
    resp = live.http.delete("/api/v1/apps/strict")
    live.wait_job(resp.json()["job"]["id"])
    assert_error(live.http.post("/api/v1/apps/strict/up"), 404)


def test_new_revision_rolls_out_one_replica_at_a_time(live: LiveServer) -> None:
    post(live, hello("roll"))
    run(live, "roll", "up", {"replicas": 2})
    old = {c.id for c in live.containers("roll")}
    resp = post(live, hello("roll", extra="  env:\n    - name: COLOR\n      value: blue\n"))
    job_id = resp.json()["results"][0]["job"]
    assert job_id
    job = live.wait_job(job_id)
    assert job["status"] == "succeeded", job
    steps = [s["step"].split()[0] for s in job["steps"] if s["status"] != "running"]  # no progress lines
    # surge of one, drain before stop: never fewer than 2 replicas serving
    assert steps == ["start", "drain", "stop", "start", "drain", "stop"]
    now = live.containers("roll")
    assert len(now) == 2 and not old & {c.id for c in now}
    assert all(c.labels["org.orchestry.revision"] == "2" for c in now)


def test_logs_merge_replicas(live: LiveServer) -> None:
    post(live, hello("talk"))
    run(live, "talk", "up", {"replicas": 2})
    for c in running(live, "talk"):
        serving(c)
    text = live.http.get("/api/v1/apps/talk/logs", params={"lines": 20}).text
    prefixes = {line.split()[0] for line in text.splitlines() if line}
    assert prefixes == {f"{live.cluster}-talk-1", f"{live.cluster}-talk-2"}
    cli = live.cli("logs", "talk", "-n", "5")
    assert cli.returncode == 0 and f"{live.cluster}-talk-1" in cli.stdout

    # follow: lines that appear after the request arrive on the open response
    def later() -> None:
        time.sleep(0.5)
        for c in running(live, "talk"):
            serving(c)

    writer = threading.Thread(target=later, daemon=True)
    writer.start()
    with live.http.stream("GET", "/api/v1/apps/talk/logs", params={"lines": 0, "follow": 1}, timeout=10) as resp:
        assert resp.status_code == 200
        first = next(resp.iter_lines())
    writer.join(10)  # before the next test removes the replicas it talks to
    assert first.startswith(f"{live.cluster}-talk-")


def test_the_dashboard_follows_logs_as_server_sent_events(live: LiveServer) -> None:
    """The logs page appends new lines as they come (issue 15): an event stream of the replicas' new lines,
    in a follow slot shared with the API's streams."""
    post(live, hello("tail"))
    run(live, "tail", "up", {"replicas": 1})
    (replica,) = running(live, "tail")
    serving(replica)
    page = live.http.get("/ui/apps/tail/logs").text
    assert 'data-stream="/ui/apps/tail/logs/stream"' in page

    def later() -> None:
        time.sleep(0.5)
        serving(replica)

    writer = threading.Thread(target=later, daemon=True)
    writer.start()
    events: list[str] = []
    with live.http.stream("GET", "/ui/apps/tail/logs/stream", timeout=10) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-accel-buffering"] == "no"
        for line in resp.iter_lines():
            events.append(line)
            if line.startswith("data: "):
                break
    writer.join(10)
    assert events[0] == "retry: 5000"
    assert events[-1].startswith(f"data: {live.cluster}-tail-1 ")
    assert live.http.get("/ui/apps/nosuch/logs/stream").status_code == 404


def test_cli_wait_shows_progress(live: LiveServer) -> None:
    post(live, hello("cliapp"))
    out = live.cli("up", "cliapp", "--replicas", "2", "--wait")
    assert out.returncode == 0, out.stderr
    assert f"[ok ] start {live.cluster}-cliapp-1" in out.stdout and "succeeded" in out.stdout
    jobs = live.cli("jobs", "--app", "cliapp")
    assert "deploy" in jobs.stdout and "succeeded" in jobs.stdout
    job_id = jobs.stdout.splitlines()[1].split()[0]
    assert "steps:" in live.cli("job", job_id).stdout
    assert live.cli("scale", "cliapp", "99").returncode == 1
    assert live.cli("down", "cliapp", "--wait").returncode == 0
    ghost = live.cli("register", "-", stdin=hello("ghost2", image=missing_image("orchestry-no-such")).encode())
    assert ghost.returncode == 0
    failed = live.cli("start", "ghost2", "--wait")
    assert failed.returncode == 1 and "not available locally" in failed.stderr


def test_second_controller_runs_no_job_while_the_first_leads(live: LiveServer, tmp_path: Path) -> None:
    other = start_server(live.db_url, tmp_path, extra_env={"ORCHESTRY_CLUSTER_NAME": live.cluster})
    try:
        post(live, hello("shared"))
        for i in range(4):
            job = live.wait_job(act(other, "shared", "scale", {"replicas": i % 2 + 1})["job"]["id"])
            assert job["status"] == "succeeded" and job["owner"] == live.env["ORCHESTRY_NODE_ID"]
        jobs = live.http.get("/api/v1/jobs").json()["jobs"]
        assert {j["owner"] for j in jobs} == {live.env["ORCHESTRY_NODE_ID"]}
    finally:
        stop_server(other, remove_containers=False)


def test_controller_killed_mid_up_converges_after_restart(databases: Any, tmp_path: Path) -> None:
    server = start_server(databases.migrated(), tmp_path, extra_env={"ORCHESTRY_LEASE_SECONDS": "2"})
    try:
        post(server, hello("crash"))
        act(server, "crash", "up", {"replicas": 5})
        wait_for(lambda: len(server.containers("crash")) >= 1, timeout=10, step=0.01)
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        server.http.close()
        restarted = start_server(
            server.db_url,
            tmp_path,
            extra_env={"ORCHESTRY_CLUSTER_NAME": server.cluster, "ORCHESTRY_LEASE_SECONDS": "2"},
        )
        try:
            wait_for(lambda: len(running(restarted, "crash")) == 5, timeout=30)
            time.sleep(1.0)
            names = sorted(c.name for c in restarted.containers("crash"))
            assert names == sorted(f"{server.cluster}-crash-{i}" for i in range(1, 6))
            assert len(restarted.containers()) == 5  # no orphan
        finally:
            stop_server(restarted)
    finally:
        if server.proc.poll() is None:
            stop_server(server)
        server.remove_containers()


def test_orphans_of_deleted_apps_are_removed(live: LiveServer) -> None:
    orphan = docker_client().containers.run(
        "orchestry-testapp:latest",
        detach=True,
        name=f"{live.cluster}-zombie-1",
        labels={
            "org.orchestry.cluster": live.cluster,
            "org.orchestry.app": "zombie",
            "org.orchestry.slot": "1",
            "org.orchestry.revision": "1",
            "org.orchestry.spec-hash": "sha256:x",
        },
    )
    foreign = docker_client().containers.run(
        "orchestry-testapp:latest", detach=True, labels={"org.orchestry.test": "1"}
    )
    try:
        wait_for(lambda: live.containers("zombie") == [], timeout=20)
        foreign.reload()
        assert foreign.status == "running"  # never touch what is not ours
    finally:
        foreign.remove(force=True)
        subprocess.run(["docker", "rm", "-f", orphan.id], capture_output=True)


def test_cluster_endpoints_and_cli(live: LiveServer, tmp_path: Path) -> None:
    other = start_server(
        live.db_url, tmp_path, extra_env={"ORCHESTRY_CLUSTER_NAME": live.cluster, "ORCHESTRY_NGINX": "off"}
    )
    try:
        me = live.env["ORCHESTRY_NODE_ID"]
        for server in (live, other):
            status = server.http.get("/api/v1/cluster/status")
            assert status.headers["X-Orchestry-Node"] == server.env["ORCHESTRY_NODE_ID"]
            body = status.json()
            assert body["leader"]["leader"] == me and body["is_leader"] == (server is live)
            assert {n["node_id"] for n in body["nodes"]} >= {me, other.env["ORCHESTRY_NODE_ID"]}
            assert server.http.get("/cluster/leader").json()["leader"] == me
            assert server.http.get("/api/v1/cluster/health").json()["has_leader"] is True
        out = other.cli("cluster", "leader")
        assert out.returncode == 0 and me in out.stdout
        nodes = other.cli("cluster", "nodes")
        assert "leader" in nodes.stdout and other.env["ORCHESTRY_NODE_ID"] in nodes.stdout and "ROUTES" in nodes.stdout
        listed = {n["node_id"]: n for n in other.http.get("/api/v1/cluster/status").json()["nodes"]}
        assert listed[other.env["ORCHESTRY_NODE_ID"]]["routes_generation"] is None  # it runs no nginx
    finally:
        stop_server(other, remove_containers=False)


def test_prometheus_metrics(live: LiveServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        resp = live.http.get("/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
        }

    post(live, hello("measured"))
    run(live, "measured", "up", {"replicas": 2})
    me = (("node", live.env["ORCHESTRY_NODE_ID"]),)
    # The node's nginx reports the table the leader stored (its route mirror, every 0.25 s).
    wait_for(
        lambda: scrape().get(("orchestry_node_routes_generation", me)) == scrape()[("orchestry_routes_generation", ())],
        timeout=5,
    )
    samples = scrape()
    assert samples[("orchestry_routes_generation", ())] >= 1
    assert samples[("orchestry_node_heartbeat_age_seconds", me)] < 5
    assert samples[("orchestry_node_routes_report_age_seconds", me)] >= 0
    assert samples[("orchestry_app_desired_replicas", (("app", "measured"),))] == 2
    assert samples[("orchestry_app_running_replicas", (("app", "measured"),))] == 2
    assert samples[("orchestry_app_ready_replicas", (("app", "measured"),))] == 2
    assert samples[("orchestry_jobs", (("kind", "deploy"), ("status", "succeeded")))] == 1
    assert samples[("orchestry_leader", (("node", live.env["ORCHESTRY_NODE_ID"]),))] == 1
    assert samples[("orchestry_leader_term", ())] >= 1


def test_follow_streams_leave_health_and_the_api_answering(live: LiveServer) -> None:
    """Eight `logs?follow` streams once held all eight request threads and `/health` timed out (issue 10):
    follow streams take at most half of them, the next is told to retry, and the rest keep answering."""
    post(live, hello("chatty"))
    run(live, "chatty", "up", {"replicas": 1})
    (replica,) = running(live, "chatty")
    serving(replica)
    release = threading.Event()
    answers: list[tuple[int, str | None]] = []

    def follow() -> None:
        with (
            httpx.Client(base_url=live.url, timeout=30) as client,
            client.stream("GET", "/api/v1/apps/chatty/logs", params={"lines": 0, "follow": 1}) as resp,
        ):
            answers.append((resp.status_code, resp.headers.get("Retry-After")))
            release.wait(30)

    streams = [threading.Thread(target=follow, daemon=True) for _ in range(10)]
    for t in streams:
        t.start()
    try:
        wait_for(lambda: len(answers) == 10, 15)
        with httpx.Client(base_url=live.url, timeout=3) as fresh:
            assert fresh.get("/health").status_code == 200
            assert fresh.get("/api/v1/apps").status_code == 200
        assert sorted(answers) == [(200, None)] * 4 + [(503, "5")] * 6, answers
    finally:
        release.set()
        serving(replica)  # a new line: each open stream writes it, sees its client gone, and ends
        for t in streams:
            t.join(10)

    def accepted() -> bool:
        serving(replica)
        with live.http.stream("GET", "/api/v1/apps/chatty/logs", params={"lines": 0, "follow": 1}) as resp:
            return resp.status_code == 200

    wait_for(accepted, 20, step=0.5)  # the slots came back
