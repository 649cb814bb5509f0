"""Every node routes: two `orchestry serve` nodes on one database, each with its own nginx (real nginx, real
Docker). The follower's nginx serves the leader's table, the leader's drains wait for it, and it keeps
routing while the leader dies and another takes over."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, hello, post, proxy_load, start_server, stop_server, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

FAST = """healthCheck:
  path: /health
  periodSeconds: 1
  timeoutSeconds: 1
termination:
  drainSeconds: 5
  gracePeriodSeconds: 1
"""
LEASE = {"ORCHESTRY_LEASE_SECONDS": "2", "ORCHESTRY_RENEW_SECONDS": "0.4", "ORCHESTRY_ROUTES_STALE_SECONDS": "2"}


def routes(node: LiveServer) -> dict[str, list[str]]:
    url = f"http://127.0.0.1:{node.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
    try:
        apps: dict[str, list[str]] = httpx.get(url, timeout=2).json()["apps"]
    except httpx.TransportError:
        return {}
    return apps


def ready(node: LiveServer) -> int:
    """What a load balancer in front of the nodes sees of this node's nginx."""
    url = f"http://127.0.0.1:{node.env['ORCHESTRY_PROXY_PORT']}/_orchestry/ready"
    return httpx.get(url, timeout=2).status_code


def leader(node: LiveServer) -> str | None:
    try:
        body = node.http.get("/api/v1/cluster/leader").json()
    except httpx.TransportError:
        return None
    return body.get("leader")  # type: ignore[no-any-return]


@contextmanager
def two_nodes(db_url: str, tmp_path: Path, lease: dict[str, str] = LEASE) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two `orchestry serve` nodes of one cluster on one database: the first leads, the second follows. Each is
    stopped at the end; a first node the test SIGKILLed leaves its nginx, which is ended, and its containers."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(db_url, tmp_path / "a", extra_env=lease)
    try:
        wait_for(lambda: leader(first) == first.env["ORCHESTRY_NODE_ID"], timeout=20)
        second = start_server(db_url, tmp_path / "b", extra_env={**lease, "ORCHESTRY_CLUSTER_NAME": first.cluster})
        try:
            yield first, second
        finally:
            stop_server(second, remove_containers=False)
    finally:
        if first.proc.poll() is None:
            stop_server(first)
        else:
            first.http.close()
            end_nginx(first)
            first.remove_containers()


def scale(node: LiveServer, replicas: int) -> None:
    job = node.wait_job(node.http.post("/api/v1/apps/both/scale", json={"replicas": replicas}).json()["job"]["id"])
    assert job["status"] == "succeeded", job


def end_nginx(node: LiveServer) -> None:
    """A SIGKILLed node leaves its nginx (a daemon) behind: end it as its administrator would."""
    for pid_file in Path(node.env["ORCHESTRY_DATA_DIR"]).rglob("nginx.pid"):
        with suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def test_the_follower_routes_drains_wait_for_it_and_it_survives_the_leader(db_url: str, tmp_path: Path) -> None:
    with two_nodes(db_url, tmp_path) as (first, second):
        post(first, hello("both") + FAST)
        job = first.wait_job(first.http.post("/api/v1/apps/both/up", json={"replicas": 3}).json()["job"]["id"])
        assert job["status"] == "succeeded", job
        # The follower's nginx serves the leader's table (it never led: no job ran there).
        wait_for(lambda: len(routes(second).get("both", [])) == 3, timeout=10)
        assert sorted(routes(second)["both"]) == sorted(routes(first)["both"])
        wait_for(lambda: ready(first) == ready(second) == 200, timeout=5)

        # Slow requests open on the follower's nginx only (the leader's has none): the scale-in waits for
        # them before stopping the replicas they went to (drainSeconds 5 > their 3.5 s > the 1 s grace period).
        proxy = f"http://127.0.0.1:{second.env['ORCHESTRY_PROXY_PORT']}/slow?ms=3500"
        slow: list[int] = []

        def one_slow() -> None:
            # POST: nginx never sends it to another replica once it reached one, so a cut request fails
            slow.append(httpx.post(proxy, headers={"Host": "both.localhost"}, content=b"x", timeout=15).status_code)

        waiters = [threading.Thread(target=one_slow) for _ in range(6)]  # round-robin over the 3 replicas
        for waiter in waiters:
            waiter.start()
        time.sleep(0.5)
        scale(first, 1)
        for waiter in waiters:
            waiter.join(15)
        assert slow == [200] * 6
        scale(first, 3)

        # Scale in under load through the follower: its requests never reach a stopped replica.
        with proxy_load(second, "both", posts=True) as counts:
            time.sleep(1)
            job = first.wait_job(first.http.post("/api/v1/apps/both/scale", json={"replicas": 1}).json()["job"]["id"])
            assert job["status"] == "succeeded", job
            time.sleep(1)
        assert counts[0] > 20 and counts[1] == 0, counts
        assert len(routes(second)["both"]) == 1
        # That load entered at the follower only; the leader's metrics count it (the follower reports its
        # nginx's counters), as what the autoscaler sees.
        history = first.http.get("/api/v1/apps/both/metrics", params={"since": "2m"}).json()["history"]
        assert max((h["rps"] or 0) for h in history) > 5, history

        # The leader dies: the follower's nginx routes on through the failover, and the follower leads.
        with proxy_load(second, "both", posts=True) as counts:
            time.sleep(0.5)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
            wait_for(lambda: leader(second) == second.env["ORCHESTRY_NODE_ID"], timeout=10)
            job = second.wait_job(second.http.post("/api/v1/apps/both/scale", json={"replicas": 2}).json()["job"]["id"])
            assert job["status"] == "succeeded", job
            wait_for(lambda: len(routes(second)["both"]) == 2, timeout=10)
        assert counts[0] > 20 and counts[1] == 0, counts
        # The dead leader's nginx runs on, with a table nobody confirms: a balancer is told to go elsewhere.
        wait_for(lambda: ready(first) == 503, timeout=5)
        assert ready(second) == 200


def down_marks(node: LiveServer) -> dict[str, float]:
    url = f"http://127.0.0.1:{node.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/down"
    marks: dict[str, float] = httpx.get(url, timeout=2).json()
    return marks


def test_a_dead_replica_is_marked_down_in_every_nodes_nginx(db_url: str, tmp_path: Path) -> None:
    """A replica's `die`: the follower's nginx skips it at once too (its own Docker event watcher marks it),
    not only once the leader's new table reaches it through the mirror. No traffic goes anywhere, so no mark
    comes from nginx's own connection errors."""
    with two_nodes(db_url, tmp_path) as (first, second):
        post(first, hello("crash") + FAST)
        job = first.wait_job(first.http.post("/api/v1/apps/crash/up", json={"replicas": 2}).json()["job"]["id"])
        assert job["status"] == "succeeded", job
        wait_for(lambda: len(routes(second).get("crash", [])) == 2, timeout=10)
        assert leader(second) == first.env["ORCHESTRY_NODE_ID"]  # the second node follows
        victim = next(b for b in first.containers("crash") if b.status == "running")
        address = f"127.0.0.1:{victim.port}"
        assert address not in down_marks(second) and address not in down_marks(first)
        victim.kill()
        began = time.monotonic()
        took = wait_for(lambda: address in down_marks(second), timeout=5, step=0.01)
        routed_out = took + wait_for(lambda: address not in routes(second).get("crash", []), timeout=10, step=0.01)
        assert address in down_marks(first)
        assert took < 3, took  # measured here: about 0.1 s after the kill
        assert 0 < down_marks(second).get(address, 10) <= 10
        print(f"follower's down mark {took:.3f} s after the kill; its table without the replica {routed_out:.3f} s")
        assert time.monotonic() - began < 15
