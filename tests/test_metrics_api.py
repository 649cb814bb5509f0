"""Metrics end to end through `orchestry serve`: the leader's collector, the JSON endpoints, the CLI, Prometheus."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from burn import burning

from conftest import LiveServer, assert_error, hello, post, start_server, stop_server, wait_for

LIMITED = "  resources:\n    cpu: 100m\n    memory: 64Mi\n"


def up(live: LiveServer, name: str, replicas: int = 1) -> None:
    post(live, hello(name, extra=LIMITED))
    job = live.wait_job(live.http.post(f"/api/v1/apps/{name}/up", json={"replicas": replicas}).json()["job"]["id"])
    assert job["status"] == "succeeded", job


def metrics(live: LiveServer, name: str, **params: str) -> dict[str, Any]:
    resp = live.http.get(f"/api/v1/apps/{name}/metrics", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def replica_cpu(live: LiveServer, name: str) -> float | None:
    replicas = metrics(live, name)["replicas"]
    return replicas[0]["cpu_percent"] if replicas else None


def test_cpu_burn_drives_the_cpu_metric_of_a_100m_replica_near_100_percent(live: LiveServer) -> None:
    """The must-show: the test app's /burn endpoint, through `orchestry serve`'s metrics endpoint."""
    up(live, "burner")
    (replica,) = live.http.get("/api/v1/apps/burner").json()["replicas"]
    # Idle first: the leader samples every 2 s; CPU needs two samples of the same container.
    wait_for(lambda: replica_cpu(live, "burner") is not None, timeout=20, step=0.5)
    idle = replica_cpu(live, "burner")
    assert idle is not None and idle < 30, idle
    with burning(f"http://{replica['address']}") as done:
        wait_for(lambda: (replica_cpu(live, "burner") or 0) > 70, timeout=30, step=0.5)
    assert done[0] > 0
    body = metrics(live, "burner")
    (row,) = body["replicas"]
    assert row["name"] == replica["name"] and row["memory_percent"] is not None and 0 < row["memory_percent"] < 100
    assert body["current"]["ready_replicas"] == 1 and body["current"]["cpu_percent"] is not None
    assert body["windows"]["1m"]["samples"] >= 2 and body["windows"]["1m"]["cpu_percent"] > 0
    assert body["history"] and body["history"][-1]["taken_at"] == body["collected_at"]

    out = live.cli("metrics", "burner")
    assert out.returncode == 0, out.stderr
    assert "CPU %" in out.stdout and "1m mean" in out.stdout and replica["name"] in out.stdout
    as_json = live.cli("metrics", "burner", "--json", "--since", "5m")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["app"] == "burner"


def test_history_is_bounded_and_bad_parameters_are_named(live: LiveServer) -> None:
    up(live, "counted")
    wait_for(lambda: len(metrics(live, "counted")["history"]) >= 3, timeout=20, step=0.5)
    history = metrics(live, "counted", limit="2")["history"]
    latest = metrics(live, "counted")["history"]
    assert len(history) == 2 and history[0]["taken_at"] < history[1]["taken_at"]
    assert history[-1]["taken_at"] <= latest[-1]["taken_at"]
    assert metrics(live, "counted", since="2000-01-01T00:00:00Z", limit="1000")["history"]
    future = metrics(live, "counted", since="2999-01-01T00:00:00Z")
    assert future["history"] == [] and future["app"] == "counted"

    body = assert_error(live.http.get("/api/v1/apps/nope/metrics"), 404, "not_found")
    assert "nope" in body["detail"]
    for params, field in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"since": "soon"}, "since")):
        body = assert_error(live.http.get("/api/v1/apps/counted/metrics", params=params), 400, "invalid_parameter")
        assert body["fields"][0]["field"] == field
    body = assert_error(live.http.get("/api/v1/apps/counted/metrics", params={"window": "1m"}), 400)
    assert body["fields"][0]["field"] == "window"
    out = live.cli("metrics", "nope")
    assert out.returncode == 1 and "nope" in out.stderr


def test_summary_and_prometheus(live: LiveServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    up(live, "summed", replicas=2)
    post(live, hello("idle"))

    def collected() -> bool:
        apps = {a["app"]: a for a in live.http.get("/api/v1/metrics").json()["apps"]}
        return apps["summed"]["cpu_percent"] is not None

    wait_for(collected, timeout=20, step=0.5)
    summary = live.http.get("/api/v1/metrics").json()
    apps = {a["app"]: a for a in summary["apps"]}
    assert set(apps) == {"summed", "idle"}
    assert apps["summed"]["desired_replicas"] == 2 and apps["summed"]["ready_replicas"] == 2
    assert apps["summed"]["memory_percent"] > 0
    assert apps["idle"]["collected_at"] is None and apps["idle"]["cpu_percent"] is None
    assert summary["totals"]["apps"] == 2 and summary["totals"]["running_replicas"] == 2
    assert summary["interval_seconds"] == 2

    text = live.http.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("orchestry_app_cpu_percent", (("app", "summed"),))] >= 0
    assert samples[("orchestry_app_memory_percent", (("app", "summed"),))] > 0
    assert samples[("orchestry_replica_health", (("app", "summed"), ("state", "healthy")))] == 2
    replicas = [k for k in samples if k[0] == "orchestry_replica_memory_percent" and ("app", "summed") in k[1]]
    assert len(replicas) == 2
    assert samples[("orchestry_app_desired_replicas", (("app", "summed"),))] == 2  # the existing ones stay

    out = live.cli("metrics")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["APP", "STATUS", "READY"]
    assert any(line.split()[:3] == ["summed", "running", "2/2"] for line in lines), out.stdout

    doc = live.http.get("/api/v1/openapi.json").json()
    assert "/api/v1/apps/{name}/metrics" in doc["paths"] and "/api/v1/metrics" in doc["paths"]
    params = {p["name"] for p in doc["paths"]["/api/v1/apps/{name}/metrics"]["get"]["parameters"]}
    assert params == {"name", "since", "limit"}


def test_only_the_leader_collects(live: LiveServer, tmp_path: Path) -> None:
    """A second controller on the same database follows: one collection every metrics_seconds, not two."""
    up(live, "once")
    follower = start_server(live.db_url, tmp_path)
    try:
        wait_for(lambda: len(metrics(live, "once", limit="1000")["history"]) >= 2, timeout=20, step=0.5)
        start = metrics(live, "once", limit="1000")["history"]
        # Judged by the samples' own times, not by a sleep: at least 4 collections after the follower came up
        # (the positive control: collection goes on), spaced one metrics period (2 s) apart on average, where
        # two collectors would space them ~1 s apart.
        seen = {p["taken_at"] for p in start}
        wait_for(
            lambda: len([p for p in metrics(live, "once", limit="1000")["history"] if p["taken_at"] not in seen]) >= 4,
            timeout=30,
            step=0.5,
        )
        end = metrics(live, "once", limit="1000")["history"]
        new = sorted(datetime.fromisoformat(p["taken_at"]) for p in end if p["taken_at"] not in seen)
        span = (new[-1] - new[0]).total_seconds()
        mean_gap = span / (len(new) - 1)
        assert 1.5 <= mean_gap <= 3.0, (mean_gap, new)  # one collection per 2 s, not two
        times = [p["taken_at"] for p in end]
        assert len(times) == len(set(times))
        assert follower.http.get("/api/v1/apps/once/metrics").json()["collected_at"] is not None  # any node answers
    finally:
        stop_server(follower, remove_containers=False)


def test_traffic_through_nginx_shows_in_the_app_and_replica_metrics(live: LiveServer) -> None:
    """nginx's counters (the TrafficMeter the leader plugs into the collector) reach the app and replica rows."""
    import httpx

    up(live, "busy", replicas=2)
    proxy = f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}"
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    http.get(proxy + "/", headers={"Host": "busy.localhost"})

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:

        def counted() -> bool:
            body = metrics(live, "busy")
            current = body["current"] or {}
            return (current.get("rps") or 0) > 1 and all((r["rps"] or 0) > 0 for r in body["replicas"])

        wait_for(counted, timeout=30, step=0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)
    body = metrics(live, "busy")
    assert body["current"]["p95_ms"] is not None and body["current"]["error_rate"] == 0
    assert len(body["replicas"]) == 2
    summary = {a["app"]: a for a in live.http.get("/api/v1/metrics").json()["apps"]}
    assert summary["busy"]["rps"] is not None
