"""Concurrent health checks: a sweep of many replicas costs about one timeout, not their sum.

Design notes (figures from bench/health_sweep and its notes, on a 2-core machine):
- Every check is a coroutine on one asyncio event loop that lives in a thread owned by the Prober;
  `check_all` may be called from any thread and blocks until its sweep is done. That loop and an
  `asyncio.run` per sweep measured the same (1,000 targets: 401 vs 410 ms with none hanging, 2.38 vs
  2.39 s with 100 hanging, medians of 15); the lasting loop keeps one bound for all callers (the periodic
  sweep and an on-demand check of one app). At most `concurrency`
  checks run at once (a semaphore); a check's deadline starts only once it holds a slot, so waiting for one
  never reads as a failed probe (the trap of httpx's pool timeout), and the waits are counted in
  `SweepStats`. The bound trades the sweep's length against the latency the healthy replicas show: with
  1,024 slots instead of 256 the 1,000-target sweep below took 1.07 instead of 1.18 x timeout, but healthy replicas
  measured about 220 instead of 60 ms, time spent waiting for the CPU, not for them.
- HTTP is one HTTP/1.1 exchange on asyncio streams, framed by h11 (the HTTP/1.1 library under httpx),
  not an `httpx.AsyncClient`: through httpx a probe costs 1.1–1.3 ms of CPU here, on streams + h11
  about 0.4 ms (all included), and a sweep is CPU-bound before it is I/O-bound. With 1,000 targets of
  which 100 hang (timeout 2 s), the checks that hang start only once the CPU has worked through those
  ahead of them: one shared httpx client took 3.4 s (256 at a time; 2.8 s with 1,024 at a time, but
  healthy replicas then measured up to 1.96 s and came close to failing), streams + h11 take about
  2.35 s with healthy replicas answering in about 0.1 s at most. Since then a target's request is framed by
  h11 once (its bytes repeat every period) and only the answer's status line is parsed, by `answer_status`:
  about 0.19 instead of 0.30 ms of CPU a probe (issue 10; 200 replicas are probed 20 times a second).
- No keep-alive: every probe opens a fresh connection and says `Connection: close` (as the kubelet does),
  so an idle connection the replica closed can never fail a probe; on loopback a connect costs far less
  than a millisecond.
- Each check's deadline is its target's `timeout_seconds`, for the whole check (connect, request, status
  line and headers). The body of the answer is never read, so a large or endless body costs nothing.
  Redirects are not followed: a 3xx is an answer (ok by default, as in Kubernetes).
- Every failure of a check becomes a failed ProbeResult with a short detail. Only a failure of the
  prober itself (closed, or a sweep that overran every deadline) raises ProberError: that is no
  observation of the replicas, and the caller must not act on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import h11

from orchestry.probe.target import Target
from orchestry.workflows.health import ProbeResult

DEFAULT_CONCURRENCY = 256
USER_AGENT = "orchestry-probe/1"
HEAD_LIMIT = 16 * 1024  # the status line and headers of an answer; more is a protocol error
READ_CHUNK = 16 * 1024
FRAMING_HEADERS = frozenset({"connection", "content-length", "transfer-encoding"})  # the prober's to set
DETAIL_MAX = 200
SWEEP_GRACE_SECONDS = 10.0  # beyond the deadlines of all its checks, a sweep is broken, not slow


def utc_now() -> datetime:
    return datetime.now(UTC)


class ProberError(RuntimeError):
    """The prober could not run a sweep: no replica was observed."""


@dataclass(frozen=True)
class SweepStats:
    targets: int
    ok: int
    failed: int
    waited: int  # checks that had to wait for a free slot (the concurrency bound) before they started
    max_wait_ms: float
    wall_ms: float


class Prober:
    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.last_sweep: SweepStats | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._slots: asyncio.Semaphore | None = None

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_all(self, targets: Sequence[Target], now_fn: Callable[[], datetime] = utc_now) -> dict[str, ProbeResult]:
        """Check every target at once (at most `concurrency` at a time); a result per target key.
        `now_fn` stamps each result with the time its check started."""
        keys = [t.key for t in targets]
        if len(set(keys)) != len(keys):
            raise ValueError("target keys must be unique")
        if not targets:
            return {}
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._sweep(list(targets), now_fn), loop)
        waves = math.ceil(len(targets) / self.concurrency)
        bound = waves * max(t.timeout_seconds for t in targets) + SWEEP_GRACE_SECONDS
        try:
            results, stats = future.result(timeout=bound)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ProberError(f"sweep of {len(targets)} targets did not finish within {bound:.1f}s") from None
        except concurrent.futures.CancelledError:
            raise ProberError("sweep cancelled: the prober was closed") from None
        self.last_sweep = stats
        return results

    def close(self) -> None:
        """Stop the loop's thread (checks still running are cancelled); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ProberError("the prober is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_run_loop, args=(loop,), name="orchestry-probe", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _sweep(
        self, targets: list[Target], now_fn: Callable[[], datetime]
    ) -> tuple[dict[str, ProbeResult], SweepStats]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return await sweep(self._slots, targets, now_fn)


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def sweep(
    slots: asyncio.Semaphore, targets: Sequence[Target], now_fn: Callable[[], datetime] = utc_now
) -> tuple[dict[str, ProbeResult], SweepStats]:
    """Check all targets on the running loop: the core of `Prober.check_all`, usable on any loop."""
    started = time.perf_counter()
    waits: list[float] = []
    results = await asyncio.gather(*(_guarded(slots, t, now_fn, waits) for t in targets))
    ok = sum(r.ok for r in results)
    stats = SweepStats(
        targets=len(targets),
        ok=ok,
        failed=len(targets) - ok,
        waited=len(waits),
        max_wait_ms=max(waits, default=0.0),
        wall_ms=(time.perf_counter() - started) * 1000,
    )
    return {t.key: r for t, r in zip(targets, results, strict=True)}, stats


async def _guarded(
    slots: asyncio.Semaphore, target: Target, now_fn: Callable[[], datetime], waits: list[float]
) -> ProbeResult:
    queued = time.perf_counter()
    must_wait = slots.locked()
    async with slots:
        if must_wait:
            waits.append((time.perf_counter() - queued) * 1000)
        at = now_fn()
        start = time.perf_counter()
        try:
            async with asyncio.timeout(target.timeout_seconds):
                if target.protocol == "TCP":
                    ok, detail = await _check_tcp(target)
                else:
                    ok, detail = await _check_http(target)
        except TimeoutError:
            return ProbeResult(False, at, None, f"timeout after {float(target.timeout_seconds)}s")
        except Exception as exc:  # every failure of a check is a failed check, never an error of the sweep
            return ProbeResult(False, at, None, describe(exc))
        return ProbeResult(ok, at, (time.perf_counter() - start) * 1000, detail)


async def _check_http(target: Target) -> tuple[bool, str]:
    """One HTTP/1.1 exchange on a fresh connection; the answer is the status line (after any 1xx)."""
    request = request_bytes(target)  # before connecting: a request h11 refuses fails without a connection
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(request)
        await writer.drain()
        head = b""
        while True:
            status = answer_status(head)
            if status is not None:
                return target.accepts(status), f"HTTP {status}"
            data = await reader.read(READ_CHUNK)
            if not data:
                return False, "connection closed without a response"
            head += data
    finally:
        writer.close()  # no keep-alive; the body, if any, is never read


@functools.lru_cache(maxsize=4096)
def request_bytes(target: Target) -> bytes:
    """The request's bytes, framed and checked by h11 once per target (a probe repeats them every period:
    h11 per probe was ~0.1 ms of CPU to send and ~0.15 ms to read the answer, issue 10)."""
    conn = h11.Connection(h11.CLIENT)
    body = target.body.encode() if target.method == "POST" else b""
    out = conn.send(h11.Request(method=target.method, target=target.path, headers=request_headers(target, body)))
    if body:
        out += conn.send(h11.Data(data=body))
    return out + conn.send(h11.EndOfMessage())


class ProtocolError(Exception):
    """The answer is not HTTP/1.x."""


STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9]{2})(?: [^\r\n]*)?\r?\n")
HEAD_END = re.compile(rb"\r?\n\r?\n")


def answer_status(data: bytes) -> int | None:
    """The final status of an answer that starts with `data`; None until its head is complete. 1xx heads
    (103 Early Hints, 100 Continue) come before the real answer and are skipped. Only the status line is
    checked: the headers and the body are not read (the status is the answer, as the kubelet takes it).
    Raises ProtocolError when `data` cannot begin an HTTP/1.x answer or its head exceeds HEAD_LIMIT."""
    at = 0
    while True:
        status = STATUS_LINE.match(data, at)
        end = HEAD_END.search(data, at)
        if status is None and (end is not None or data.find(b"\n", at) >= 0):
            raise ProtocolError(f"not an HTTP/1.x status line: {data[at : at + 40]!r}")
        if status is None or end is None:
            if len(data) - at > HEAD_LIMIT:
                raise ProtocolError(f"the answer's head exceeds {HEAD_LIMIT} bytes")
            return None  # more is coming
        code = int(status.group(1))
        if code >= 200 or code == 101:
            return code
        at = end.end()  # an informational answer: the real one follows


def request_headers(target: Target, body: bytes) -> list[tuple[str, str]]:
    """Host, User-Agent and the target's own headers (which may replace the first two); framing is ours."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    own = [(name, value) for name, value in target.headers if name.lower() not in FRAMING_HEADERS]
    given = {name.lower() for name, _ in own}
    headers = [
        (k, v) for k, v in (("Host", f"{host}:{target.port}"), ("User-Agent", USER_AGENT)) if k.lower() not in given
    ]
    headers += own
    headers.append(("Connection", "close"))
    if target.method == "POST":
        headers.append(("Content-Length", str(len(body))))
    return headers


async def _check_tcp(target: Target) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(target.host, target.port)
    writer.close()
    with contextlib.suppress(OSError):  # the connection was made; how it ends does not matter
        await writer.wait_closed()
    return True, "TCP connected"


def describe(exc: BaseException) -> str:
    """A short, stable detail for a failed check."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes, not followed forever
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, ProtocolError):
        text = f"protocol error: {exc}"
    elif isinstance(exc, h11.LocalProtocolError):
        text = f"invalid request: {exc}"
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"
