"""Zero downtime under load: scaling up and down and rolling out a new revision fail no request.

The short version of `bench/zero_downtime`: client threads keep sending GET / and POST /echo through
Orchestry's nginx (keep-alive connections) while the app scales 2 → 4 → 2 and a new revision rolls out.
Every request must succeed. Killing a replica is left to the benchmark: a POST already sent to a container
that dies cannot be saved by any proxy (it must not be replayed), so that phase fails by nature.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from conftest import LiveServer, hello, post

pytestmark = pytest.mark.usefixtures("testapp_image")

APP = "zdt"
CLIENTS = 8
PAUSE = 0.01  # seconds between two requests of one client: a few hundred requests per second in all
MAX_LOAD_SECONDS = 90  # the load stops by itself even if the test body fails before stopping it
BODY = b"zero-downtime " * 8


def spec(version: str) -> str:
    return hello(
        APP,
        extra="  environment:\n"
        f"    - {{name: VERSION, value: '{version}'}}\n"
        "healthCheck:\n"
        "  path: /health\n"
        "  periodSeconds: 0.5\n"
        "  timeoutSeconds: 0.5\n"
        "  failureThreshold: 2\n"
        "termination:\n"
        "  drainSeconds: 5\n"
        "  gracePeriodSeconds: 2\n"
        "scaling:\n"
        "  mode: manual\n"
        "  maxReplicas: 8\n",
    )


@dataclass
class Load:
    """Client threads, each with one keep-alive connection pool to nginx, alternating GET / and POST /echo."""

    base_url: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: Counter[str] = field(default_factory=Counter)  # by method
    served_by: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic time, method, what)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int) -> None:
        for i in range(clients):
            thread = threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)

    def _client(self) -> None:
        deadline = time.monotonic() + MAX_LOAD_SECONDS
        headers = {"Host": f"{APP}.localhost"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                method = "GET" if n % 2 == 0 else "POST"
                n += 1
                try:
                    resp = client.get("/") if method == "GET" else client.post("/echo", content=BODY)
                    good = 200 <= resp.status_code < 300 and (method == "GET" or resp.content.endswith(BODY))
                    what = f"{resp.status_code} {resp.text[:120]!r}"
                except httpx.HTTPError as exc:
                    good, what = False, f"{type(exc).__name__}: {exc}"
                with self.lock:
                    if good:
                        self.ok[method] += 1
                        self.served_by[resp.headers.get("X-Served-By", "?")] += 1
                    else:
                        self.failures.append((time.monotonic(), method, what))
                self.stop.wait(PAUSE)


def wait_ok(live: LiveServer, resp: httpx.Response, timeout: float = 60) -> dict[str, Any]:
    assert resp.status_code in (200, 201, 202), resp.text
    body = resp.json()
    job_id = body["results"][0]["job"] if "results" in body else body["job"]["id"]
    job = live.wait_job(job_id, timeout=timeout)
    assert job["status"] == "succeeded", job
    return job


def served_ids(live: LiveServer) -> set[str]:
    """The running replicas as their answers name them (X-Served-By: the container's hostname, its short id)."""
    return {c.id[:12] for c in live.containers(APP) if c.status == "running"}


def test_scaling_and_a_rollout_under_load_fail_no_request(live: LiveServer) -> None:
    began = time.monotonic()
    assert post(live, spec("1")).status_code == 201
    wait_ok(live, live.http.post(f"/api/v1/apps/{APP}/up", json={"replicas": 2}))
    first = served_ids(live)
    assert len(first) == 2

    load = Load(f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}")
    marks: list[tuple[float, str]] = []
    load.start(CLIENTS)
    try:
        time.sleep(1.0)
        for step, replicas in (("scale to 4", 4), ("scale to 2", 2)):
            marks.append((time.monotonic(), step))
            wait_ok(live, live.http.post(f"/api/v1/apps/{APP}/scale", json={"replicas": replicas}))
            time.sleep(0.5)
        marks.append((time.monotonic(), "roll out revision 2"))
        wait_ok(live, post(live, spec("2")))
        time.sleep(1.0)
    finally:
        load.finish()

    def when(t: float) -> str:
        step = next((name for at, name in reversed(marks) if at <= t), "steady")
        return f"+{t - began:.2f}s ({step})"

    failed = [f"{when(t)} {method}: {what}" for t, method, what in load.failures]
    print(f"ok: {dict(load.ok)}; failed: {len(failed)}; served by: {dict(load.served_by)}")
    print("steps: " + ", ".join(f"{when(at)}" for at, _ in marks) + f"; took {time.monotonic() - began:.1f}s")
    assert failed == [], "\n".join(failed[:20])
    assert load.ok["GET"] > 200 and load.ok["POST"] > 200, load.ok
    # The traffic reached the replicas of each phase: the two first ones through the whole steady phase, the
    # two added ones (only ~1 s in rotation before the scale-in: no count asked), the new revision's two.
    app = live.http.get(f"/api/v1/apps/{APP}").json()
    last = served_ids(live)
    assert app["revision"] == 2 and len(last) == 2
    assert len(load.served_by) >= 4, load.served_by
    assert all(load.served_by[replica] >= 10 for replica in first), (first, load.served_by)
    assert last <= set(load.served_by), (last, load.served_by)
    assert time.monotonic() - began < 60
