"""Long-lived connections through a real server's nginx: a websocket is a request in flight, so a scale-in
drains its replica for up to `drainSeconds` and then closes it (never before, and a normal request is not
cut), a rollout and a delete likewise; server-sent events arrive as the app sends them, not when nginx's
buffers fill.

The app is the test image of this checkout (`pinned_image`): its /ws echoes websocket text frames and its
/events streams text/event-stream."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import LiveServer, hello, post, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

DRAIN = 4.0
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FAST = (
    "healthCheck:\n  path: /health\n  periodSeconds: 0.5\n  timeoutSeconds: 0.5\n  failureThreshold: 2\n"
    f"termination:\n  drainSeconds: {DRAIN:g}\n  gracePeriodSeconds: 1\n"
)


@pytest.fixture(scope="module")
def image(testapp_image: str) -> str:
    from orchestry.testapp.build import pinned_image

    return pinned_image()


def spec(name: str, image: str, version: str = "1") -> str:
    return hello(name, image, extra=f"  environment: [{{name: VERSION, value: '{version}'}}]\n" + FAST)


def register(live: LiveServer, name: str, image: str, replicas: int) -> None:
    body = spec(name, image)
    resp = post(live, body)
    assert resp.status_code in (200, 201, 202), resp.text
    job = live.http.post(f"/api/v1/apps/{name}/up", json={"replicas": replicas}).json()["job"]["id"]
    assert live.wait_job(job, timeout=120)["status"] == "succeeded", live.http.get(f"/api/v1/jobs/{job}").text
    wait_for(lambda: served_by(live, name) == replicas, timeout=30, step=0.2)


def proxy(live: LiveServer) -> tuple[str, int]:
    return "127.0.0.1", int(live.env["ORCHESTRY_PROXY_PORT"])


def served_by(live: LiveServer, name: str) -> int:
    """How many replicas answer GET / through nginx (a few requests: round-robin reaches each)."""
    seen = set()
    with httpx.Client(base_url=f"http://{proxy(live)[0]}:{proxy(live)[1]}", timeout=5) as client:
        for _ in range(8):
            resp = client.get("/", headers={"Host": f"{name}.localhost"})
            if resp.status_code == 200:
                seen.add(resp.headers["x-served-by"])
    return len(seen)


class Websocket:
    """A websocket client on a plain socket (text frames up to 125 bytes)."""

    def __init__(self, live: LiveServer, app: str) -> None:
        self.conn = socket.create_connection(proxy(live), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.conn.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {app}.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.conn.recv(1)
            assert chunk, f"closed during the handshake: {head!r}"
            head += chunk
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101 "), head
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == accept
        self.replica = headers["x-served-by"]

    def echo(self, text: bytes) -> bytes | None:
        """Send one masked text frame; the frame that comes back (None once the connection is closed)."""
        mask = os.urandom(4)
        try:
            self.conn.sendall(
                bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
            )
            header = self.conn.recv(2)
            if len(header) < 2 or header[0] & 0x0F == 0x8:
                return None
            payload = b""
            while len(payload) < header[1] & 0x7F:
                chunk = self.conn.recv((header[1] & 0x7F) - len(payload))
                if not chunk:
                    return None
                payload += chunk
            return payload
        except OSError:
            return None

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def sockets() -> Iterator[list[Websocket]]:
    opened: list[Websocket] = []
    yield opened
    for ws in opened:
        ws.close()


def test_a_websocket_keeps_its_replica_draining_until_drain_seconds_then_is_closed(
    live: LiveServer, image: str, sockets: list[Websocket]
) -> None:
    register(live, "wsd", image, 2)
    while len({ws.replica for ws in sockets}) < 2:  # one websocket open to each replica at least
        assert len(sockets) < 12, "round-robin never reached the second replica"
        sockets.append(Websocket(live, "wsd"))
    assert all(ws.echo(b"hello") == b"hello" for ws in sockets)
    slow: list[Any] = []

    def slow_request() -> None:  # a normal request open across the scale-in: it must not be cut
        host, port = proxy(live)
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=15) as client:
            resp = client.get("/slow?ms=2500", headers={"Host": "wsd.localhost"})
            slow.append((resp.status_code, resp.headers.get("x-served-by")))

    threads = [threading.Thread(target=slow_request) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    began = time.monotonic()
    job = live.http.post("/api/v1/apps/wsd/scale", json={"replicas": 1}).json()["job"]["id"]
    closed_at: dict[int, float] = {}
    kept = set(range(len(sockets)))
    while time.monotonic() - began < DRAIN + 15 and len(closed_at) < len(sockets):
        for i in sorted(kept):
            if sockets[i].echo(b"still there?") != b"still there?":
                closed_at[i] = time.monotonic() - began
                kept.discard(i)
        time.sleep(0.2)
    for thread in threads:
        thread.join(20)
    finished = live.wait_job(job, timeout=60)
    assert finished["status"] == "succeeded", finished
    running = {b.id[:12] for b in live.containers("wsd") if b.status == "running"}  # ids are hostnames
    assert len(running) == 1
    assert slow == [(200, slow[i][1]) for i in range(4)], slow  # every normal request answered, none cut
    stopped = {i for i, ws in enumerate(sockets) if ws.replica not in running}
    assert stopped and set(closed_at) == stopped, (closed_at, [ws.replica for ws in sockets])
    for i in stopped:  # closed by the drain's end, not before it: the websocket counted as in flight
        assert DRAIN - 0.3 <= closed_at[i] <= DRAIN + 6, closed_at
    for i in kept:  # those to the replica that stays are untouched
        assert sockets[i].echo(b"after") == b"after"
    # Deleting the app drains its last replica the same way.
    began = time.monotonic()
    job = live.http.delete("/api/v1/apps/wsd").json()["job"]["id"]
    wait_for(lambda: all(sockets[i].echo(b"open?") is None for i in kept), timeout=DRAIN + 15, step=0.2)
    assert DRAIN - 0.3 <= time.monotonic() - began <= DRAIN + 6.2
    assert live.wait_job(job, timeout=60)["status"] == "succeeded"


def test_a_rollout_drains_the_old_replicas_websocket_up_to_drain_seconds(
    live: LiveServer, image: str, sockets: list[Websocket]
) -> None:
    register(live, "wsr", image, 1)
    sockets.append(Websocket(live, "wsr"))
    old = sockets[0].replica
    began = time.monotonic()
    resp = post(live, spec("wsr", image, version="2"))
    assert resp.status_code == 200, resp.text
    job = resp.json()["results"][0]["job"]
    wait_for(lambda: sockets[0].echo(b"open?") is None, timeout=DRAIN + 30, step=0.2)
    closed_at = time.monotonic() - began
    assert live.wait_job(job, timeout=60)["status"] == "succeeded"
    # The new replica starts and becomes healthy first, then the old one drains for DRAIN seconds.
    assert DRAIN - 0.3 <= closed_at <= DRAIN + 20, closed_at
    fresh = Websocket(live, "wsr")
    sockets.append(fresh)
    assert fresh.replica != old and fresh.echo(b"new") == b"new"


def test_server_sent_events_arrive_as_they_are_sent(live: LiveServer, image: str) -> None:
    register(live, "sse", image, 1)
    host, port = proxy(live)
    arrivals: list[float] = []
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=15) as client:
        started = time.monotonic()
        with client.stream("GET", "/events?n=4&ms=800", headers={"Host": "sse.localhost"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 4, arrivals
    for i, at in enumerate(arrivals):  # event i is sent at i * 0.8 s
        assert i * 0.8 - 0.1 <= at <= i * 0.8 + 0.5, arrivals
