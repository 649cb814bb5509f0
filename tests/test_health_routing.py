"""Health checks and routing through the controller's own nginx, with real Docker replicas."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, assert_error, hello, post, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

PERIOD, FAILURES = 1.0, 2
FAST = f"""healthCheck:
  path: /health
  periodSeconds: {PERIOD}
  timeoutSeconds: 1
  failureThreshold: {FAILURES}
termination:
  drainSeconds: 5
  gracePeriodSeconds: 1
"""


def up(live: LiveServer, name: str, replicas: int) -> dict[str, Any]:
    job = live.wait_job(live.http.post(f"/api/v1/apps/{name}/up", json={"replicas": replicas}).json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return job


def proxy(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}", timeout=5)


def served_by(resp: httpx.Response) -> str:
    return resp.headers["X-Served-By"]


def nginx_prefix(live: LiveServer) -> Path:
    return Path(live.env["ORCHESTRY_DATA_DIR"]) / "nginx"


def nginx_pid(live: LiveServer) -> int:
    return int(next(nginx_prefix(live).rglob("nginx.pid")).read_text())


def nginx_error_log(live: LiveServer) -> str:
    return "".join(p.read_text(errors="replace") for p in nginx_prefix(live).rglob("error.log"))


def access_log(live: LiveServer) -> list[dict[str, Any]]:
    path = nginx_prefix(live) / "logs" / "access.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_apps_are_routed_by_host_and_by_path(live: LiveServer) -> None:
    post(live, hello("alpha") + FAST)
    post(live, hello("beta") + FAST)
    up(live, "alpha", 2)
    up(live, "beta", 1)
    with proxy(live) as client:
        by_host = {served_by(client.get("/", headers={"Host": "alpha.localhost"})) for _ in range(6)}
        assert len(by_host) == 2  # round-robin over both replicas
        assert "app_name=" in client.get("/beta/whoami").text
        assert "path=/whoami" in client.get("/beta/whoami").text  # the prefix is stripped
        pid = nginx_pid(live)
        post(live, hello("gamma") + FAST)
        up(live, "gamma", 1)
        assert client.get("/", headers={"Host": "gamma.localhost"}).status_code == 200
        missing = client.get("/", headers={"Host": "nope.localhost"})
        assert missing.status_code == 404
        assert nginx_pid(live) == pid  # the third app was routed without restarting nginx
        assert "signal 1 (SIGHUP)" not in nginx_error_log(live)  # ... and without reloading it


def test_no_healthy_replica_answers_503(live: LiveServer) -> None:
    post(live, hello("empty") + FAST)
    up(live, "empty", 1)
    live.wait_job(live.http.post("/api/v1/apps/empty/down").json()["job"]["id"])
    with proxy(live) as client:
        resp = client.get("/", headers={"Host": "empty.localhost"})
    # a stopped app leaves the table: 404; a running app without a healthy replica: 503
    assert resp.status_code in (404, 503)


def test_an_unhealthy_replica_leaves_rotation_and_is_replaced(live: LiveServer) -> None:
    post(live, hello("sick") + FAST)
    up(live, "sick", 2)
    replicas = live.http.get("/api/v1/apps/sick").json()["replicas"]
    victim = replicas[0]
    httpx.post(f"http://{victim['address']}/health/fail")

    def out_of_rotation() -> bool:
        health = live.http.get("/api/v1/apps/sick/health").json()
        return any(r["name"] == victim["name"] and not r["in_rotation"] for r in health["replicas"]) or all(
            r["name"] != victim["name"] for r in health["replicas"]
        )

    took = wait_for(out_of_rotation, timeout=10)
    # the bound: failureThreshold x periodSeconds + 1 s (plus the half-second the sweep may wait)
    assert took <= FAILURES * PERIOD + 1.0 + 0.5, f"left rotation after {took:.2f}s"
    left_at = datetime.now(UTC) + timedelta(seconds=1)  # the log's times have whole seconds
    # replaced: two healthy replicas again, the victim gone
    wait_for(
        lambda: (
            sorted(
                r["health"]
                for r in live.http.get("/api/v1/apps/sick/health").json()["replicas"]
                if r["name"] != victim["name"] or r["state"] != "running"
            )
            == ["healthy", "healthy"]
        ),
        timeout=20,
    )
    with proxy(live) as client:
        for _ in range(10):
            assert client.get("/", headers={"Host": "sick.localhost"}).status_code == 200
    time.sleep(0.5)
    hits = [
        e
        for e in access_log(live)
        if e["app"] == "sick" and victim["address"] in e["upstream"] and datetime.fromisoformat(e["time"]) > left_at
    ]
    assert hits == []
    events = [e["type"] for e in live.http.get("/api/v1/apps/sick/events").json()["events"]]
    assert "replica.unhealthy" in events and "replica.replaced" in events


def test_a_killed_replica_leaves_the_routing_table_at_its_death(live: LiveServer) -> None:
    """On Docker's `die` event, not once its replacement is healthy: POSTs (never retried) stop reaching it."""
    post(live, hello("mortal") + FAST.replace("periodSeconds: 1.0", "periodSeconds: 1.0\n  initialDelaySeconds: 5"))
    up(live, "mortal", 2)
    victim, survivor = live.http.get("/api/v1/apps/mortal").json()["replicas"]
    control = f"http://127.0.0.1:{live.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
    assert sorted(httpx.get(control).json()["apps"]["mortal"]) == sorted([victim["address"], survivor["address"]])
    next(c for c in live.containers("mortal") if c.name == victim["name"]).kill()
    took = wait_for(lambda: httpx.get(control).json()["apps"]["mortal"] == [survivor["address"]], timeout=5)
    # the replacement waits 5 s before its first check: the table changed on the event, not on its health
    assert took < 3, f"the dead replica stayed routed for {took:.2f}s"
    with proxy(live) as client:
        for _ in range(10):
            assert client.post("/echo", headers={"Host": "mortal.localhost"}, content=b"x").status_code == 200


def test_health_endpoints(live: LiveServer) -> None:
    post(live, hello("probe") + FAST)
    up(live, "probe", 1)
    health = live.http.get("/api/v1/apps/probe/health").json()
    assert health["healthy"] == 1 and health["check"]["path"] == "/health"
    (replica,) = health["replicas"]
    assert replica["health"] == "healthy" and replica["last_latency_ms"] is not None
    resp = live.http.post("/api/v1/apps/probe/health/check")
    assert resp.status_code == 202
    job = live.wait_job(resp.json()["job"]["id"])
    assert job["status"] == "succeeded" and job["result"]["checked"] == 1
    assert_error(live.http.get("/api/v1/apps/nope/health"), 404)
    status = live.cli("status", "probe")
    assert "healthy" in status.stdout


@pytest.mark.parametrize(
    ("check", "healthy"),
    [
        ("healthCheck:\n  protocol: TCP\n  periodSeconds: 1\n  timeoutSeconds: 1\n", True),
        (
            "healthCheck:\n  method: POST\n  path: /echo\n  headers: [{name: X-Probe, value: '1'}]\n  body: ping\n"
            "  periodSeconds: 1\n  timeoutSeconds: 1\n",
            True,
        ),
        (
            "healthCheck:\n  path: /missing-but-200\n  expectedStatusCodes: [204]\n  periodSeconds: 0.5\n"
            "  timeoutSeconds: 0.5\n  failureThreshold: 1\n",
            False,
        ),
    ],
    ids=["tcp", "post-with-headers", "expected-codes"],
)
def test_check_kinds(live: LiveServer, check: str, healthy: bool) -> None:
    post(live, hello("kind") + check)
    resp = live.http.post("/api/v1/apps/kind/up", json={"replicas": 1})
    if healthy:
        assert live.wait_job(resp.json()["job"]["id"], timeout=30)["status"] == "succeeded"
        assert live.http.get("/api/v1/apps/kind/health").json()["healthy"] == 1
    else:
        wait_for(
            lambda: any(
                r["health"] == "unhealthy" or r["consecutive_failures"] > 0
                for r in live.http.get("/api/v1/apps/kind/health").json()["replicas"]
            ),
            timeout=15,
        )


def test_initial_delay_keeps_a_new_replica_out_of_rotation(live: LiveServer) -> None:
    post(
        live,
        hello("slowstart") + "healthCheck:\n  initialDelaySeconds: 5\n  periodSeconds: 0.5\n  timeoutSeconds: 0.5\n",
    )
    started = time.monotonic()
    resp = live.http.post("/api/v1/apps/slowstart/up", json={"replicas": 1})
    wait_for(lambda: live.http.get("/api/v1/apps/slowstart/health").json()["replicas"], timeout=10)
    (replica,) = live.http.get("/api/v1/apps/slowstart/health").json()["replicas"]
    assert time.monotonic() - started < 5
    assert replica["health"] == "unknown" and replica["last_check_at"] is None and not replica["in_rotation"]
    assert live.wait_job(resp.json()["job"]["id"], timeout=30)["status"] == "succeeded"
    # the delay counts from the container's start (inspected to the nanosecond, after this request was sent)
    assert time.monotonic() - started >= 5
    (replica,) = live.http.get("/api/v1/apps/slowstart/health").json()["replicas"]
    assert replica["health"] == "healthy"


def test_a_revision_that_never_becomes_healthy_halts_the_rollout(live: LiveServer) -> None:
    post(live, hello("halt") + FAST)
    up(live, "halt", 2)
    old = {r["name"] for r in live.http.get("/api/v1/apps/halt").json()["replicas"]}
    broken = FAST.replace("failureThreshold: 2", "failureThreshold: 2\n  expectedStatusCodes: [204]")  # it answers 200
    resp = post(live, hello("halt") + broken)
    job = live.wait_job(resp.json()["results"][0]["job"], timeout=60)
    assert job["status"] == "failed" and "did not become healthy" in job["error"]
    app = live.http.get("/api/v1/apps/halt").json()
    assert app["status"] == "failed" and "old revision keeps serving" in app["status_reason"]
    serving = {r["name"] for r in app["replicas"] if r["revision"] == 1 and r["state"] == "running"}
    assert serving == old
    assert all(r["revision"] == 1 for r in app["replicas"])  # the failed new replica was stopped
    with proxy(live) as client:
        assert all(client.get("/halt/").status_code == 200 for _ in range(5))
