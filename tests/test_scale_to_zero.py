"""Scale to zero end to end (real Docker, real nginx, the controller): an app with minReplicas 0 idles to zero
after idleSeconds without a request, shows `idle`, and its first requests (a GET and a POST) wake it and are
answered, the POST reaching the app once; beyond the wake bounds nginx answers 503 with Retry-After."""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, hello, post, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

FAST = """healthCheck:
  path: /health
  periodSeconds: 1
  timeoutSeconds: 1
termination:
  drainSeconds: 1
  gracePeriodSeconds: 1
"""


SLOW_HEALTH = "  env:\n    - name: HEALTH_DELAY\n      value: '600'\n"  # /health answers 503 for 10 minutes


def app(live: LiveServer, name: str) -> dict[str, Any]:
    body: dict[str, Any] = live.http.get(f"/api/v1/apps/{name}").json()
    return body


def listed(live: LiveServer, name: str) -> str:
    return str(next(a for a in live.http.get("/api/v1/apps").json()["apps"] if a["name"] == name)["status"])


def events(live: LiveServer, name: str) -> list[dict[str, Any]]:
    answer = live.http.get(f"/api/v1/apps/{name}/events", params={"limit": "100"})
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["events"]
    return found


def proxy(live: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}", timeout=40, trust_env=False)


def test_an_idle_app_goes_to_zero_and_its_first_requests_wake_it(live: LiveServer) -> None:
    spec = hello(
        "sleepy",
        extra=FAST
        + "scaling:\n  minReplicas: 0\n  maxReplicas: 2\n  idleSeconds: 4\n"
        + "wake:\n  maxQueuedRequests: 10\n  timeoutSeconds: 30\n",
    )
    assert post(live, spec).status_code == 201
    job = live.http.post("/api/v1/apps/sleepy/up", json={"replicas": 1}).json()["job"]["id"]
    assert live.wait_job(job)["status"] == "succeeded"
    assert app(live, "sleepy")["status"] == "running"

    wait_for(lambda: app(live, "sleepy")["desired_replicas"] == 0, timeout=45, step=0.5)
    assert app(live, "sleepy")["status"] == "idle" and listed(live, "sleepy") == "idle"
    shown = live.cli("list")
    assert shown.returncode == 0 and any(line.split()[:2] == ["sleepy", "idle"] for line in shown.stdout.splitlines())
    policy = live.cli("scaling", "sleepy")
    assert "scales to zero after 4s without a request; woken by the next one" in policy.stdout, policy.stdout
    wait_for(lambda: app(live, "sleepy")["replica_count"] == 0, timeout=30, step=0.5)  # its container is gone
    idle = [e for e in events(live, "sleepy") if e["type"] == "app.idle"]
    assert len(idle) == 1 and "no request and no open connection for 4s (idleSeconds)" in idle[0]["message"]
    decisions = live.http.get("/api/v1/apps/sleepy/scaling/history").json()["decisions"]
    assert decisions[0]["target"] == 0 and "idleSeconds" in decisions[0]["reason"]

    marker = uuid.uuid4().hex
    with proxy(live) as c, ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        get = pool.submit(c.get, "/", headers={"Host": "sleepy.localhost"})
        posted = pool.submit(c.post, f"/sleepy/once?id={marker}", content=b"once")
        got, echoed = get.result(), posted.result()
        woke_in = time.monotonic() - started
    assert got.status_code == 200, got.text
    assert echoed.status_code == 200 and "POST" in echoed.text, echoed.text
    assert woke_in < 20
    assert app(live, "sleepy")["status"] == "running"
    logs = live.http.get("/api/v1/apps/sleepy/logs", params={"lines": "200"}).text
    assert logs.count(f"POST /once?id={marker} 200") == 1, logs  # sent once

    out = [e for e in events(live, "sleepy") if e["type"] == "scaling.out"]
    assert out and "held by nginx on" in out[0]["message"] and out[0]["actor"].startswith("wake:")
    woke = wait_for(lambda: any(e["type"] == "app.woke" for e in events(live, "sleepy")), timeout=10) >= 0
    assert woke
    latency = next(e for e in events(live, "sleepy") if e["type"] == "app.woke")["details"]["latency_seconds"]
    assert 0 < latency < 20
    metrics = live.http.get("/metrics").text
    assert 'orchestry_app_wakes_total{app="sleepy"} 1.0' in metrics
    assert 'orchestry_app_wake_seconds_count{app="sleepy"} 1.0' in metrics


def test_beyond_the_wake_bounds_nginx_answers_503_with_retry_after(live: LiveServer) -> None:
    """An app at zero whose replica never passes its health check (HEALTH_DELAY): one request is held for
    timeoutSeconds then answered 503; the one beyond maxQueuedRequests is answered 503 at once."""
    spec = hello(
        "stuck",
        extra=FAST
        + "scaling:\n  minReplicas: 0\n  maxReplicas: 1\n"
        + "wake:\n  maxQueuedRequests: 1\n  timeoutSeconds: 3\n",
    ).replace("    - containerPort: 8080\n", "    - containerPort: 8080\n" + SLOW_HEALTH)
    assert post(live, spec).status_code == 201, spec
    job = live.http.post("/api/v1/apps/stuck/scale", json={"replicas": 0}).json()["job"]["id"]
    assert live.wait_job(job)["status"] == "succeeded"
    assert app(live, "stuck")["status"] == "idle"
    table = f"http://127.0.0.1:{live.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
    wait_for(lambda: "stuck" in httpx.get(table, trust_env=False).json().get("wake", {}), timeout=15, step=0.2)
    with proxy(live) as c, ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        held = pool.submit(c.get, "/stuck/")
        time.sleep(0.5)
        over = c.get("/stuck/")
        assert over.status_code == 503 and over.json()["error"] == "wake_queue_full"
        assert over.headers["Retry-After"] == "2"
        timed_out = held.result()
        waited = time.monotonic() - started
    assert timed_out.status_code == 503 and timed_out.json()["error"] == "wake_timeout"
    assert timed_out.headers["Retry-After"] == "5"
    assert 2.9 <= waited < 6
    assert app(live, "stuck")["desired_replicas"] == 1  # the wake was asked all the same


LEASE = {"ORCHESTRY_LEASE_SECONDS": "2", "ORCHESTRY_RENEW_SECONDS": "0.4"}


def test_requests_held_on_a_follower_wake_the_app_through_a_failover(db_url: str, tmp_path: Path) -> None:
    """Two nodes; the app at zero; the leader is killed and at once requests (a GET and a POST) reach the
    follower's nginx: its controller writes the wake, the follower takes the lease and runs it, the requests
    are answered, the POST sent once."""
    from test_cluster_routing import leader, two_nodes

    with two_nodes(db_url, tmp_path, LEASE) as (first, second):
        spec = hello("nap", extra=FAST + "scaling:\n  minReplicas: 0\n  maxReplicas: 1\n")
        assert post(first, spec).status_code == 201
        job = first.http.post("/api/v1/apps/nap/scale", json={"replicas": 0}).json()["job"]["id"]
        assert first.wait_job(job)["status"] == "succeeded"
        table = f"http://127.0.0.1:{second.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
        wait_for(lambda: "nap" in httpx.get(table, trust_env=False).json().get("wake", {}), timeout=15, step=0.2)

        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        marker = uuid.uuid4().hex
        with proxy(second) as c, ThreadPoolExecutor(2) as pool:
            started = time.monotonic()
            get = pool.submit(c.get, "/nap/")
            posted = pool.submit(c.post, f"/nap/once?id={marker}", content=b"x")
            got, sent = get.result(), posted.result()
            waited = time.monotonic() - started
        assert got.status_code == 200 and sent.status_code == 200, (got.text, sent.text)
        assert leader(second) == second.env["ORCHESTRY_NODE_ID"]
        assert waited < 25
        logs = second.http.get("/api/v1/apps/nap/logs", params={"lines": "200"}).text
        assert logs.count(f"POST /once?id={marker} 200") == 1, logs
        out = [e for e in events(second, "nap") if e["type"] == "scaling.out"]
        assert len(out) == 1 and out[0]["actor"] == f"wake:{second.env['ORCHESTRY_NODE_ID']}", out
