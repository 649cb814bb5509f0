"""The prober against real servers on loopback: HTTP answers, POST with headers and body, redirects, timeouts,
refused connections, TCP, and many targets at once, of which some hang."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from orchestry.probe import Prober, ProberError, Target, target_from_spec
from orchestry.probe import prober as prober_module
from orchestry.spec import validate_document
from orchestry.testapp.ports import free_port

HOST = "127.0.0.1"
FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Server:
    """An HTTP/1.1 server on loopback, on its own asyncio loop in a thread. One thread for all connections:
    a thread per connection (http.server) starts too slowly next to a busy prober, under the GIL."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []  # method, path, headers (lower), body
        self.hits: dict[str, int] = {}
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    def close(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, HOST, 0, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the prober gave up (timeout) or hung up early
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.hits[path] = self.hits.get(path, 0) + 1
        self.received.append((method, path, headers, body))

        def answer(status: int, extra: str = "", body: bytes = b"") -> None:
            length = "" if status == 204 else f"Content-Length: {len(body)}\r\n"
            writer.write(f"HTTP/1.1 {status} X\r\n{length}{extra}Connection: close\r\n\r\n".encode() + body)

        if path == "/ok":
            answer(200, body=b"ok")
        elif path == "/fail":
            answer(500, body=b"broken")
        elif path == "/nocontent":
            answer(204)
        elif path == "/post":
            good = method == "POST" and headers.get("x-probe") == "1" and body == b'{"ping": true}'
            answer(200 if good else 400)
        elif path == "/redirect":
            answer(301, extra="Location: /elsewhere\r\n")
        elif path.startswith("/slow"):
            await asyncio.sleep(0.3)
            answer(200)
        elif path == "/endless":
            # Headers at once, then a body that never ends: the status is the answer, the body is not read.
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await reader.read()  # until the prober hangs up
        elif path == "/close":
            return  # hang up without a word
        elif path == "/garbage":
            writer.write(b"SPEAKING NO HTTP\r\n\r\n")
        elif path == "/early":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
            answer(200)
        elif path.startswith("/hang"):
            await reader.read()  # read, never answered, until the prober hangs up
        else:
            answer(404)
        await writer.drain()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def prober() -> Iterator[Prober]:
    with Prober() as p:
        yield p


def http(key: str, port: int, path: str, **kw: object) -> Target:
    return Target(key=key, host=HOST, port=port, path=path, **kw)  # type: ignore[arg-type]


def one(prober: Prober, target: Target) -> tuple[bool, str, float | None]:
    result = prober.check_all([target], now_fn=lambda: FIXED_NOW)[target.key]
    assert result.at == FIXED_NOW
    return result.ok, result.detail, result.latency_ms


def test_http_200_is_ok(server: Server, prober: Prober) -> None:
    ok, detail, latency = one(prober, http("a-1", server.port, "/ok"))
    assert (ok, detail) == (True, "HTTP 200")
    assert latency is not None and 0 < latency < 1000
    (method, path, headers, _), *_ = server.received
    assert (method, path) == ("GET", "/ok")
    assert headers["user-agent"].startswith("orchestry-probe")


def test_http_500_fails(server: Server, prober: Prober) -> None:
    ok, detail, latency = one(prober, http("a-1", server.port, "/fail"))
    assert (ok, detail) == (False, "HTTP 500")
    assert latency is not None  # an answer came, however bad


@pytest.mark.parametrize(
    ("path", "codes", "ok", "detail"),
    [
        ("/nocontent", (204,), True, "HTTP 204"),
        ("/ok", (204,), False, "HTTP 200"),
        ("/fail", (500, 503), True, "HTTP 500"),
        ("/nocontent", None, True, "HTTP 204"),
        ("/missing", None, False, "HTTP 404"),
    ],
)
def test_expected_status_codes(
    server: Server, prober: Prober, path: str, codes: tuple[int, ...] | None, ok: bool, detail: str
) -> None:
    assert one(prober, http("a-1", server.port, path, expected_status_codes=codes))[:2] == (ok, detail)


def test_post_sends_headers_and_body(server: Server, prober: Prober) -> None:
    target = http("a-1", server.port, "/post", method="POST", headers=(("X-Probe", "1"),), body='{"ping": true}')
    assert one(prober, target)[:2] == (True, "HTTP 200")
    (method, _, headers, body), *_ = server.received
    assert (method, headers["x-probe"], body) == ("POST", "1", b'{"ping": true}')
    # The same endpoint without the header is refused by the server, and so the check fails.
    assert one(prober, http("a-2", server.port, "/post", method="POST", body='{"ping": true}'))[:2] == (
        False,
        "HTTP 400",
    )


def test_redirect_counts_as_ok_and_is_not_followed(server: Server, prober: Prober) -> None:
    assert one(prober, http("a-1", server.port, "/redirect"))[:2] == (True, "HTTP 301")
    assert one(prober, http("a-2", server.port, "/redirect", expected_status_codes=(200,)))[:2] == (
        False,
        "HTTP 301",
    )
    assert server.hits.get("/elsewhere") is None
    assert server.hits["/redirect"] == 2


@pytest.mark.parametrize(
    ("path", "ok", "detail"),
    [
        ("/close", False, "connection closed without a response"),
        ("/garbage", False, "protocol error: "),
        ("/early", True, "HTTP 200"),  # a 1xx comes before the real answer
    ],
)
def test_odd_servers(server: Server, prober: Prober, path: str, ok: bool, detail: str) -> None:
    got_ok, got_detail, _ = one(prober, http("a-1", server.port, path))
    assert got_ok == ok
    assert got_detail.startswith(detail)


def test_request_headers_host_and_framing(server: Server, prober: Prober) -> None:
    """The target's headers are sent as given and may replace Host and User-Agent; framing stays the
    prober's (one Content-Length, Connection: close)."""
    headers = (("Host", "api.example"), ("X-Probe", "1"), ("Content-Length", "999"), ("Connection", "keep-alive"))
    target = http("a-1", server.port, "/post", method="POST", headers=headers, body='{"ping": true}')
    assert one(prober, target)[:2] == (True, "HTTP 200")
    _, _, got, body = server.received[0]
    assert (got["host"], got["x-probe"], got["content-length"], got["connection"]) == (
        "api.example",
        "1",
        "14",
        "close",
    )
    assert got["user-agent"].startswith("orchestry-probe") and body == b'{"ping": true}'
    one(prober, http("a-2", server.port, "/ok"))
    assert server.received[1][2]["host"] == f"{HOST}:{server.port}"
    assert "content-length" not in server.received[1][2]  # a GET has no body


def test_status_is_the_answer_and_the_body_is_not_read(server: Server, prober: Prober) -> None:
    started = time.perf_counter()
    assert one(prober, http("a-1", server.port, "/endless", timeout_seconds=2.0))[:2] == (True, "HTTP 200")
    assert time.perf_counter() - started < 1.5


def test_server_that_never_answers_times_out(server: Server, prober: Prober) -> None:
    ok, detail, latency = one(prober, http("a-1", server.port, "/hang", timeout_seconds=0.3))
    assert (ok, detail, latency) == (False, "timeout after 0.3s", None)


def test_listening_socket_that_never_accepts_times_out(prober: Prober) -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)  # the kernel completes the handshake; nobody ever reads
        port = listener.getsockname()[1]
        assert one(prober, http("a-1", port, "/health", timeout_seconds=0.3))[:2] == (False, "timeout after 0.3s")


def test_connection_refused(prober: Prober) -> None:
    assert one(prober, http("a-1", free_port(), "/health"))[:3] == (False, "connection refused", None)


def test_tcp_open_port_ok_and_closed_port_fails(prober: Prober) -> None:
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        open_port = listener.getsockname()[1]
        results = prober.check_all(
            [
                Target("open", HOST, open_port, protocol="TCP", timeout_seconds=1.0),
                Target("closed", HOST, free_port(), protocol="TCP", timeout_seconds=1.0),
            ]
        )
    assert (results["open"].ok, results["open"].detail) == (True, "TCP connected")
    assert results["open"].latency_ms is not None
    assert (results["closed"].ok, results["closed"].detail) == (False, "connection refused")


def test_many_targets_with_some_hanging_cost_about_one_timeout(server: Server, prober: Prober) -> None:
    # The hanging targets time out after 1 s; the others get room to answer on a busy machine (one test server
    # answers 180 of them at once), so the count below is about concurrency, not about this machine's speed.
    targets = [
        http(f"app-{i}", server.port, f"/hang/{i}", timeout_seconds=1.0)
        if i % 10 == 0
        else http(f"app-{i}", server.port, "/ok", timeout_seconds=8.0)
        for i in range(200)
    ]
    started = time.perf_counter()
    results = prober.check_all(targets)
    elapsed = time.perf_counter() - started
    assert len(results) == 200
    assert sum(r.ok for r in results.values()) == 180
    assert {r.detail for r in results.values() if not r.ok} == {"timeout after 1.0s"}
    assert elapsed < 5.0, f"sweep took {elapsed:.2f}s; one timeout is 1 s, the hanging ones in a row would be 20 s"
    assert prober.last_sweep is not None
    assert (prober.last_sweep.targets, prober.last_sweep.ok, prober.last_sweep.failed) == (200, 180, 20)


def test_waiting_for_a_slot_is_not_a_timeout(server: Server) -> None:
    """The deadline of a check starts when it gets a slot: with one slot, the second of two 0.3 s checks
    waits 0.3 s and still passes its 0.5 s timeout."""
    with Prober(concurrency=1) as prober:
        results = prober.check_all([http(f"a-{i}", server.port, f"/slow/{i}", timeout_seconds=0.5) for i in range(2)])
        assert all(r.ok for r in results.values()), results
        assert prober.last_sweep is not None
        assert prober.last_sweep.waited == 1
        assert prober.last_sweep.max_wait_ms >= 250


def test_an_unexpected_exception_fails_only_its_check(
    server: Server, prober: Prober, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = prober_module._check_http

    async def flaky(target: Target) -> tuple[bool, str]:
        if target.key == "boom":
            raise RuntimeError("something unexpected")
        return await real(target)

    monkeypatch.setattr(prober_module, "_check_http", flaky)
    targets = [http(f"a-{i}", server.port, "/ok") for i in range(5)]
    targets += [
        http("boom", server.port, "/ok"),
        http("bad-header", server.port, "/ok", headers=(("X-Bad", "line\nbreak"),)),
    ]
    results = prober.check_all(targets)
    assert all(results[f"a-{i}"].ok for i in range(5))
    assert (results["boom"].ok, results["boom"].detail) == (False, "RuntimeError: something unexpected")
    assert not results["bad-header"].ok
    assert results["bad-header"].detail.startswith("invalid request:")


def test_probes_ignore_proxy_settings(server: Server, prober: Prober, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{HOST}:{free_port()}")
    monkeypatch.setenv("ALL_PROXY", f"http://{HOST}:{free_port()}")
    with Prober() as fresh:
        assert fresh.check_all([http("a-1", server.port, "/ok")])["a-1"].ok


def test_check_all_from_several_threads(server: Server, prober: Prober) -> None:
    def sweep(n: int) -> int:
        results = prober.check_all([http(f"t{n}-{i}", server.port, "/ok") for i in range(20)])
        return sum(r.ok for r in results.values())

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(sweep, range(4))) == [20, 20, 20, 20]


def test_empty_duplicate_and_closed(server: Server) -> None:
    prober = Prober()
    assert prober.check_all([]) == {}
    with pytest.raises(ValueError, match="unique"):
        prober.check_all([http("a", server.port, "/ok"), http("a", server.port, "/fail")])
    assert prober.check_all([http("a", server.port, "/ok")])["a"].ok
    prober.close()
    prober.close()  # idempotent
    with pytest.raises(ProberError, match="closed"):
        prober.check_all([http("a", server.port, "/ok")])
    Prober().close()  # never started: nothing to stop


def test_target_from_a_normalised_spec() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "App",
        "metadata": {"name": "api"},
        "spec": {"image": "api:1", "ports": [{"containerPort": 8080}]},
        "healthCheck": {
            "method": "POST",
            "path": "/ready",
            "headers": [{"name": "X-Probe", "value": "1"}],
            "body": "ping",
            "expectedStatusCodes": [200, 204],
            "timeoutSeconds": 2,
        },
    }
    loaded, errors, _ = validate_document(doc)
    assert loaded is not None, errors
    target = target_from_spec("api-1", HOST, 49153, loaded.normalized["healthCheck"])
    assert target == Target(
        key="api-1",
        host=HOST,
        port=49153,
        protocol="HTTP",
        method="POST",
        path="/ready",
        headers=(("X-Probe", "1"),),
        body="ping",
        expected_status_codes=(200, 204),
        timeout_seconds=2.0,
    )
    assert target.url == "http://127.0.0.1:49153/ready"
    defaults = target_from_spec("w-1", HOST, 1, {"protocol": "TCP", "port": 5432})
    assert (defaults.protocol, defaults.expected_status_codes, defaults.timeout_seconds) == ("TCP", None, 5.0)
    assert Target("v6", "::1", 80).url == "http://[::1]:80/health"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", None),
        (b"HTTP/1.1 2", None),  # the status line has not all come
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", None),  # nor the head
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503),
        (b"HTTP/1.1 204\r\n\r\n", 204),  # no reason phrase
        (b"HTTP/1.1 301 Moved\nLocation: /x\n\n", 301),  # bare newlines
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", None),  # an informational answer: wait for the real one
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n", 404),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", 101),
    ],
)
def test_the_answer_status_is_read_from_the_head_alone(data: bytes, status: int | None) -> None:
    assert prober_module.answer_status(data) == status


@pytest.mark.parametrize(
    "data",
    [
        b"SPEAKING NO HTTP\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"x" * prober_module.HEAD_LIMIT,  # a head that never ends
    ],
)
def test_an_answer_that_is_not_http_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(prober_module.ProtocolError):
        prober_module.answer_status(data)


def test_a_targets_request_is_framed_once() -> None:
    """Its bytes are the same every period: built (and checked by h11) once, not at every probe."""
    target = Target("a-1", HOST, 8080, method="POST", path="/p", headers=(("X-A", "1"),), body="{}")
    first = prober_module.request_bytes(target)
    assert first is prober_module.request_bytes(Target("a-1", HOST, 8080, "HTTP", "POST", "/p", (("X-A", "1"),), "{}"))
    assert first.startswith(b"POST /p HTTP/1.1\r\n") and first.endswith(b"\r\n\r\n{}")
    assert b"content-length: 2\r\n" in first.lower() and b"connection: close\r\n" in first.lower()
