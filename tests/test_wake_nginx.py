"""Scale to zero in a real nginx: a request for an app in the table's `wake` map with no replica is held
until a replica appears (then sent once), within the app's bounds (503 with Retry-After beyond), and the wake
is announced at once on the control long-poll."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_edge_live import WebsocketEcho, read_frame
from test_nginx_live import Backends, client, control

from orchestry.nginx.manager import NginxManager
from orchestry.nginx.routes import build_route_table

pytestmark = pytest.mark.usefixtures("nginx_required")

WAKE = {"web": {"max": 5, "timeout": 3}}


def test_a_held_get_and_post_reach_the_first_replica_once(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": []}, WAKE))
    w = backends["w"]
    with ThreadPoolExecutor(4) as pool, client(nginx) as c:
        started = time.monotonic()
        get = pool.submit(c.get, "/web/hello")
        post = pool.submit(c.post, "/", headers={"Host": "web.localhost"}, content=b"payload")
        time.sleep(0.5)
        assert not get.done() and not post.done()  # held, not answered 503
        nginx.push_routes(build_route_table(2, {"web": [w.address]}, WAKE))
        got, posted = get.result(timeout=5), post.result(timeout=5)
        waited = time.monotonic() - started
    assert (got.status_code, got.json()["path"]) == (200, "/hello")
    assert (posted.status_code, posted.json()["method"]) == (200, "POST")
    assert 0.5 <= waited < 1.5
    assert sorted(w.hits) == [("GET", "/hello"), ("POST", "/")]  # each sent once
    # the wait is the wake's, not the app's: left out of its latency (else a woken app looks slow and scales out)
    deadline = time.monotonic() + 2
    while nginx.traffic_counters()["apps"]["web"]["requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # counted in the log phase, just after the answer
    assert nginx.traffic_counters()["apps"]["web"]["latency_ms"] < 400


def test_the_wake_long_poll_answers_at_once(nginx: NginxManager) -> None:
    nginx.push_routes(build_route_table(1, {"web": []}, WAKE))
    first = nginx.wanted_wakes(-1, 0)
    assert first.apps == {}
    with ThreadPoolExecutor(2) as pool, client(nginx) as c:
        poll = pool.submit(nginx.wanted_wakes, first.seq, 10)
        time.sleep(0.3)
        assert not poll.done()
        asked = time.monotonic()
        held = pool.submit(c.get, "/web/")
        wanted = poll.result(timeout=5)
        heard = time.monotonic() - asked
        assert wanted.seq > first.seq and set(wanted.apps) == {"web"}
        assert wanted.apps["web"][0] == 1
        assert heard < 0.1, heard
        timeout = held.result(timeout=10)
    # nobody woke it: 503 after wake.timeoutSeconds, with Retry-After
    assert timeout.status_code == 503 and timeout.json()["error"] == "wake_timeout"
    assert timeout.headers["Retry-After"] == "5"
    assert nginx.wanted_wakes(-1, 0).seq >= wanted.seq + 2  # recorded again each second while held


def test_beyond_max_queued_requests_is_503_with_retry_after(nginx: NginxManager, backends: Backends) -> None:
    nginx.push_routes(build_route_table(1, {"web": []}, WAKE))
    w = backends["w"]
    with ThreadPoolExecutor(8) as pool, client(nginx) as c:
        held = [pool.submit(c.get, f"/web/{i}") for i in range(5)]
        time.sleep(0.4)
        over = c.get("/web/over")
        assert over.status_code == 503 and over.json()["error"] == "wake_queue_full"
        assert over.headers["Retry-After"] == "2"
        assert nginx.wanted_wakes(-1, 0).apps["web"][0] == 5
        nginx.push_routes(build_route_table(2, {"web": [w.address]}, WAKE))
        assert [f.result(timeout=5).status_code for f in held] == [200] * 5
        assert c.get("/web/after").status_code == 200
    assert len(w.hits) == 6
    assert nginx.wanted_wakes(-1, 0).apps == {}  # released: no wake is wanted any more (none stale either)


def test_an_app_without_wake_is_503_at_once_and_one_that_leaves_is_404(nginx: NginxManager) -> None:
    nginx.push_routes(build_route_table(1, {"web": [], "api": []}, {"web": WAKE["web"]}))
    with ThreadPoolExecutor(2) as pool, client(nginx) as c:
        started = time.monotonic()
        assert c.get("/api/").json() == {"error": "no_healthy_replica", "app": "api"}
        assert time.monotonic() - started < 0.2
        held = pool.submit(c.get, "/web/")
        time.sleep(0.3)
        nginx.push_routes(build_route_table(2, {"api": []}))
        gone = held.result(timeout=5)
    assert (gone.status_code, gone.json()["error"]) == (404, "unknown_app")


def test_a_never_requested_app_that_may_idle_counts_zero(nginx: NginxManager) -> None:
    nginx.push_routes(build_route_table(1, {"web": [], "api": []}, {"web": WAKE["web"]}))
    apps = nginx.traffic_counters()["apps"]
    assert apps["web"]["requests"] == 0 and "api" not in apps


def test_the_table_with_wake_round_trips_and_bad_bounds_are_refused(nginx: NginxManager) -> None:
    nginx.push_routes(build_route_table(1, {"web": []}, {"web": {"max": 3, "timeout": 2.5}}))
    assert nginx.served_routes()["wake"] == {"web": {"max": 3, "timeout": 2.5}}
    with control(nginx) as c:
        for bad in ({"web": {"max": 0, "timeout": 1}}, {"web": {"max": 1, "timeout": 0}}, {"nope": WAKE["web"]}):
            body = json.dumps({"generation": 2, "apps": {"web": []}, "wake": bad})
            answer = c.put("/_orchestry/routes", content=body)
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_routes", bad
        assert c.get("/_orchestry/wakes", params={"wait": "31"}).status_code == 400
    with pytest.raises(ValueError, match="wake of nope"):
        build_route_table(1, {"web": []}, {"nope": WAKE["web"]})


def test_a_held_websocket_upgrade_is_sent_once_and_its_connection_counts(nginx: NginxManager) -> None:
    """The upgrade waits like any request, then the exchange runs; while it is open the app has an open
    connection in nginx's counters (what keeps it from idling)."""
    echo = WebsocketEcho()
    try:
        nginx.push_routes(build_route_table(1, {"chat": []}, {"chat": {"max": 5, "timeout": 5}}))
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection(("127.0.0.1", nginx.settings.listen_port), timeout=5) as conn:
            conn.sendall(
                f"GET /chat/room HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            time.sleep(0.4)
            assert nginx.wanted_wakes(-1, 0).apps["chat"][0] == 1  # held
            nginx.push_routes(build_route_table(2, {"chat": [echo.address]}, {"chat": {"max": 5, "timeout": 5}}))
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(1)
            assert head.startswith(b"HTTP/1.1 101 "), head
            mask = os.urandom(4)
            conn.sendall(bytes([0x81, 0x85]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello")))
            assert read_frame(conn) == b"HELLO"
            assert nginx.traffic_counters()["apps"]["chat"]["active"] == 1
        assert echo.headers["upgrade"] == "websocket"
    finally:
        echo.close()
