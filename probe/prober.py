"""Concurrent health checks: a sweep of many replicas costs about one timeout, not their sum.

Design notes (numbers measured with bench/health_sweep on a 2-core machine):
- One asyncio event loop in a thread owned by the Prober, with one shared `httpx.AsyncClient`;
  `check_all` is called from any thread and blocks until the sweep is done. A loop that lives across
  sweeps was measured against `asyncio.run` per sweep (see the report in bench/health_sweep's docstring).
- At most `concurrency` checks run at once (a semaphore); the client's pool has exactly that many
  connections, so a check never waits for a pool slot inside httpx, and `Timeout(..., pool=None)` makes
  sure that such a wait could never read as a failed probe (../shared/traps.md). Waiting for the
  semaphore is counted in `SweepStats`, and a check's deadline starts only once it holds a slot.
- No keep-alive: every probe opens a fresh connection (as the kubelet does). A reused connection that
  the replica closed while idle would otherwise fail a probe now and then; on loopback a connect costs
  far less than a millisecond, and httpx's pool slows down with many idle connections (traps.md).
- Each check's deadline is its target's `timeout_seconds`, for the whole check (connect, request, status
  line and headers); the body is never read, so a large or endless body costs nothing. Redirects are not
  followed: a 3xx is an answer (ok by default, as in Kubernetes).
- Every failure of a check becomes a failed ProbeResult with a short detail. Only a failure of the
  prober itself (closed, or a sweep that overran every deadline) raises ProberError: that is no
  observation of the replicas, and the caller must not act on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from orchestry.probe.target import Target
from orchestry.workflows.health import ProbeResult

DEFAULT_CONCURRENCY = 256
DEFAULT_TIMEOUT = 5.0  # the client's; every request passes its target's own
USER_AGENT = "orchestry-probe/1"
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
    waited: int  # checks that had to wait for a free slot (concurrency bound) before they started
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
        self._client: httpx.AsyncClient | None = None
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
        """Close the client and stop the loop's thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    # -- the loop's side ----------------------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise ProberError("the prober is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run_loop, args=(loop, ready), name="orchestry-probe", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _sweep(
        self, targets: list[Target], now_fn: Callable[[], datetime]
    ) -> tuple[dict[str, ProbeResult], SweepStats]:
        if self._client is None:
            self._client = make_client(self.concurrency)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        return await sweep(self._client, self._slots, targets, now_fn)


def make_client(concurrency: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        timeout=httpx.Timeout(DEFAULT_TIMEOUT, pool=None),
        follow_redirects=False,
        trust_env=False,  # never send probes through a proxy taken from the environment
        headers={"User-Agent": USER_AGENT},
    )


async def sweep(
    client: httpx.AsyncClient, slots: asyncio.Semaphore, targets: list[Target], now_fn: Callable[[], datetime]
) -> tuple[dict[str, ProbeResult], SweepStats]:
    """Check all targets on the running loop: the core of `Prober.check_all`, usable on any loop."""
    started = time.perf_counter()
    waits: list[float] = []
    results = await asyncio.gather(*(_guarded(client, slots, t, now_fn, waits) for t in targets))
    by_key = {t.key: r for t, r in zip(targets, results, strict=True)}
    ok = sum(r.ok for r in results)
    stats = SweepStats(
        targets=len(targets),
        ok=ok,
        failed=len(targets) - ok,
        waited=len(waits),
        max_wait_ms=max(waits, default=0.0),
        wall_ms=(time.perf_counter() - started) * 1000,
    )
    return by_key, stats


async def _guarded(
    client: httpx.AsyncClient,
    slots: asyncio.Semaphore,
    target: Target,
    now_fn: Callable[[], datetime],
    waits: list[float],
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
                    ok, detail = await _check_http(client, target)
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(False, at, None, f"timeout after {float(target.timeout_seconds)}s")
        except Exception as exc:  # every failure of a check is a failed check, never an error of the sweep
            return ProbeResult(False, at, None, describe(exc))
        return ProbeResult(ok, at, (time.perf_counter() - start) * 1000, detail)


async def _check_http(client: httpx.AsyncClient, target: Target) -> tuple[bool, str]:
    content = target.body.encode() if target.method == "POST" else None
    async with client.stream(
        target.method,
        target.url,
        headers=list(target.headers),
        content=content,
        timeout=httpx.Timeout(target.timeout_seconds, pool=None),
    ) as response:
        status = response.status_code
    return target.accepts(status), f"HTTP {status}"


async def _check_tcp(target: Target) -> tuple[bool, str]:
    _, writer = await asyncio.open_connection(target.host, target.port)
    writer.close()
    with contextlib.suppress(OSError):  # the connection was made; how it ends does not matter
        await writer.wait_closed()
    return True, "TCP connected"


def describe(exc: BaseException) -> str:
    """A short, stable detail for a failed check."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        text = f"protocol error: {exc}"
    elif isinstance(exc, httpx.ConnectError | httpx.NetworkError):
        text = f"connect error: {exc}"
    elif isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"
