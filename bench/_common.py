"""Shared plumbing of the benchmarks: a throwaway database, an `orchestry serve` process, Docker clean-up,
HTTP readiness probes and percentiles.

Everything here cleans up after itself in `finally` blocks, Ctrl-C and SIGTERM included: servers are
stopped, containers removed by label, temporary folders deleted. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.testapp.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
TESTAPP_IMAGE = "orchestry-testapp:latest"
CLUSTER_LABEL = "org.orchestry.cluster"
BENCH_LABEL = "org.orchestry.bench"  # on the containers a benchmark starts itself (the floor), never Orchestry's


# -- interruption ---------------------------------------------------------------------------------------------


def install_signal_handlers() -> None:
    """SIGTERM behaves like Ctrl-C, so `finally` blocks clean up in both cases (SIGINT too when the shell
    started us with it ignored, as background jobs are)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


_shield = {"depth": 0, "pending": False}


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while a start-up or a clean-up that must not be cut in half runs; the
    outermost shield raises KeyboardInterrupt once it is done if one arrived meanwhile (SIGKILL still works)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def later(signum: int, frame: object) -> None:
        _shield["pending"] = True
        print("one moment, cleaning up…", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, later) for sig in (signal.SIGINT, signal.SIGTERM)}
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if _shield["depth"] == 0 and _shield["pending"]:
            _shield["pending"] = False
            if sys.exc_info()[1] is None:
                raise KeyboardInterrupt


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        with shielded():
            shutil.rmtree(path, ignore_errors=True)


# -- databases ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """The URL of a fresh, empty database (`orchestry serve` migrates it when it starts).

    PostgreSQL: a throwaway server from tests/pg_server.py (run as the `postgres` user), unless
    ORCHESTRY_TEST_PG_URL names an admin URL of a running one; then a database of our own is created in it
    and dropped at the end.
    """
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'orchestry.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    admin_url = os.environ.get("ORCHESTRY_TEST_PG_URL")
    server = None
    name = "bench_" + uuid.uuid4().hex[:12]
    try:
        if not admin_url:
            if str(ROOT / "tests") not in sys.path:
                sys.path.insert(0, str(ROOT / "tests"))
            from pg_server import start_server

            with shielded():  # cut half-way, it would leave its folder behind, and maybe a running server
                server = start_server()
            admin_url = server.admin_url
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with shielded():
            if server is not None:
                server.stop()
            elif admin_url:
                admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
                with contextlib.suppress(Exception), admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()


# -- an `orchestry serve` process -------------------------------------------------------------------------------


@dataclass
class Server:
    """A real `orchestry serve` process on a free port, with its own data dir and cluster name."""

    url: str
    db_url: str
    cluster: str
    node: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_job(self, job_id: int, timeout: float) -> dict[str, Any]:
        """The job once it has ended (succeeded, failed, cancelled); TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.http.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(0.05)


def _serve_env(db_url: str, workdir: Path, port: int, cluster: str, node: str) -> dict[str, str]:
    # Nothing of the caller's Orchestry configuration leaks in: no ORCHESTRY_* variable, no config file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRY_")}
    env.update(
        XDG_CONFIG_HOME=str(workdir / "config"),
        XDG_DATA_HOME=str(workdir / "data"),
        ORCHESTRY_DATA_DIR=str(workdir / "orchestry"),
        ORCHESTRY_DATABASE_URL=db_url,
        ORCHESTRY_URL=f"http://127.0.0.1:{port}",
        ORCHESTRY_CLUSTER_NAME=cluster,
        ORCHESTRY_NODE_ID=node,
    )
    return env


@contextlib.contextmanager
def serve(
    db_url: str, workdir: Path, *, startup_timeout: float = 60, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Start `orchestry serve`, wait until it answers /health and leads, yield it; stop it and remove every
    container of its cluster at the end. `extra_env`: e.g. PYTHONPATH to run another version's source."""
    port = free_port()
    cluster = "bench" + uuid.uuid4().hex[:8]
    node = f"bench-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"serve-{port}.log"
    server: Server | None = None
    try:
        with shielded(), open(log_path, "wb") as log:  # once started, `server` is set and `finally` stops it
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestry", "serve", "--port", str(port)],
                env={**_serve_env(db_url, workdir, port, cluster, node), **(extra_env or {})},
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            server = Server(f"http://127.0.0.1:{port}", db_url, cluster, node, proc, log_path)
        _wait_healthy(server, startup_timeout)
        _wait_leading(server, startup_timeout)
        yield server
    finally:
        with shielded():
            if server is not None:
                server.http.close()
                server.proc.terminate()
                try:
                    server.proc.wait(15)
                except subprocess.TimeoutExpired:
                    server.proc.kill()
                    server.proc.wait()
            remove_containers({CLUSTER_LABEL: cluster})


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"orchestry serve exited with {server.proc.returncode}:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if server.http.get("/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"orchestry serve did not answer /health within {timeout:.0f} s:\n{server.log_tail()}")


def _wait_leading(server: Server, timeout: float) -> None:
    """Until this node holds the lease and its dispatcher has run one no-op job end to end."""
    from orchestry.models import jobs as jobq
    from orchestry.models.cluster import current_lease

    engine = make_engine(server.db_url)
    sessions = make_sessionmaker(engine)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with sessions() as session:
                lease = current_lease(session)
                if lease is not None and lease.holder == server.node:
                    break
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise RuntimeError(f"orchestry serve did not become leader:\n{server.log_tail()}")
            time.sleep(0.1)
        with sessions.begin() as session:
            job_id = jobq.enqueue(session, "noop", actor="bench").job.id
        while True:
            with sessions() as session:
                status = session.get(jobq.Job, job_id).status  # type: ignore[union-attr]
            if status == "succeeded":
                return
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                raise RuntimeError(f"the first no-op job ended {status}:\n{server.log_tail()}")
            time.sleep(0.05)
    finally:
        engine.dispose()


# -- Docker -----------------------------------------------------------------------------------------------------

_docker: Any = None
_docker_lock = threading.Lock()


def docker_client() -> Any:
    global _docker
    with _docker_lock:
        if _docker is None:
            import docker

            _docker = docker.from_env(timeout=120)
        return _docker


def label_filter(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def containers(labels: dict[str, str]) -> list[dict[str, Any]]:
    """Docker's summaries of the containers carrying all of `labels` (one API call)."""
    found: list[dict[str, Any]] = docker_client().api.containers(all=True, filters={"label": label_filter(labels)})
    return found


def remove_containers(labels: dict[str, str]) -> int:
    """Force-remove every container carrying all of `labels`, in parallel. Returns how many."""
    import docker.errors

    with shielded():
        api = docker_client().api
        found = containers(labels)

        def remove(summary: dict[str, Any]) -> None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                api.remove_container(summary["Id"], force=True)

        threads = [threading.Thread(target=remove, args=(c,)) for c in found]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(found)


def published_port(summary: dict[str, Any], container_port: int = 8080) -> int | None:
    for p in summary.get("Ports") or []:
        if p.get("PrivatePort") == container_port and p.get("PublicPort"):
            return int(p["PublicPort"])
    return None


def ensure_testapp() -> str:
    from orchestry.testapp.build import ensure_image

    ensure_image()
    return TESTAPP_IMAGE


# -- HTTP readiness -----------------------------------------------------------------------------------------------


def http_ok(port: int, path: str = "/", timeout: float = 1.0) -> bool:
    """One GET on 127.0.0.1:port; True on a 200. Cheap: no client object, one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_answering(
    labels: dict[str, str], count: int, *, timeout: float, poll: float, abort: Callable[[], str | None] | None = None
) -> float:
    """Until `count` containers carrying `labels` answer GET / with a 200 on their published port 8080.

    Returns the monotonic time the last of them first answered. The same probe serves the floor and
    Orchestry, so both are measured alike: one container listing per `poll`, then one GET per container
    not yet answering. `abort` may return a reason to give up (a failed job)."""
    deadline = time.monotonic() + timeout
    answered: dict[str, float] = {}
    while True:
        for summary in containers(labels):
            port = published_port(summary)
            if summary["Id"] in answered or port is None or summary.get("State") != "running":
                continue
            if http_ok(port):
                answered[summary["Id"]] = time.monotonic()
        if len(answered) >= count:
            return max(answered.values())
        reason = abort() if abort else None
        if reason:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(answered)} of {count} containers answered within {timeout:.0f} s")
        time.sleep(poll)


# -- figures ---------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# -- routing benchmarks: wrk, nginx ports, TIME_WAIT -------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk; installs Debian's (`apt-get install -y wrk`) when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's wrk (apt-get install -y wrk)", flush=True)
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing and this is not root: run `sudo apt-get install -y wrk` first")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        result = subprocess.run(["apt-get", "install", "-y", "wrk"], env=env, capture_output=True, text=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(f"could not install wrk:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    print(f"installed {found}", flush=True)
    return found


def baseline_source(ref: str, workdir: Path) -> tuple[dict[str, str], Path]:
    """The source of git `ref` unpacked under `workdir`, for `serve(..., extra_env=...)`: (that environment,
    the package's directory). Measured side by side with this tree, on the same noisy machine."""
    src = workdir / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", "--prefix=orchestry/", ref],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return {"PYTHONPATH": str(src)}, src / "orchestry"


def proxy_ports(serve_workdir: Path, source: Path | None = None) -> tuple[int, int]:
    """Free ports for the nginx of a `serve(db_url, serve_workdir)` still to start: (proxy, control).

    `serve` passes no ORCHESTRY_* variable through, so they go into the config file it reads (the one under
    its own XDG_CONFIG_HOME); without this its nginx would take the default 8080 and 8081. `source`: the
    package a baseline serves from; a version older than the TLS port refuses that setting, so it gets none."""
    proxy, control = free_port(), free_port()
    settings = (source or Path(__file__).resolve().parent.parent) / "config" / "settings.py"
    tls = f"proxy_tls_port: {free_port()}\n" if "proxy_tls_port" in settings.read_text() else ""
    config = serve_workdir / "config" / "orchestry" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"proxy_port: {proxy}\nnginx_control_port: {control}\n{tls}")
    return proxy, control


def time_wait_sockets() -> int:
    """TCP sockets in TIME_WAIT in this network namespace (/proc/net/sockstat)."""
    try:
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def settle_time_wait(below: int = 2000, timeout: float = 70) -> float:
    """Wait until fewer than `below` sockets are in TIME_WAIT (they last 60 s); returns the seconds waited.

    The test app closes every connection, so each request through Docker's port mapping leaves sockets in
    TIME_WAIT (the client's, and docker-proxy's to the container); tens of thousands of them make new
    connections slow (ephemeral port search), and a run that starts after a busy one would measure that."""
    began = time.monotonic()
    while time_wait_sockets() >= below and time.monotonic() - began < timeout:
        time.sleep(0.5)
    return time.monotonic() - began


# -- wrk --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkRun:
    """One wrk run's figures (`wrk --latency`)."""

    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(target: str, out: str) -> WrkRun:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    requests = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and requests):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkRun(
        target=target,
        rps=float(rps.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        requests=int(requests.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, sockets.groups())) if sockets else 0,
    )


def wrk(binary: str, url: str, seconds: float, connections: int, threads: int, headers: Sequence[str] = ()) -> str:
    """wrk's output; `headers`: "Name: value" lines sent with every request (e.g. "Connection: close")."""
    cmd = [binary, "--latency", "-c", str(connections), "-t", str(threads), "-d", f"{seconds:g}s", "--timeout", "10s"]
    for header in headers:
        cmd += ["-H", header]
    proc = subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{out}")
    return out


# -- profiling the controller (py-spy) -------------------------------------------------------------------------


def start_profile(pid: int, seconds: float, out: str, gil: bool = True) -> subprocess.Popen[bytes]:
    """py-spy sampling the process at 100 Hz without pausing it. With `gil`, only the thread that holds the GIL:
    the Python code using the CPU (a thread waiting for a socket, the disk or a lock is not counted); without,
    every thread py-spy sees running, each stack under its thread's name (C code that released the GIL, such as
    SQLite's, counts too)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100", "--nonblocking"]
    cmd += ["--threads", "--gil"] if gil else ["--threads"]
    return subprocess.Popen([*cmd, "--format", "raw", "--output", out], stdout=subprocess.DEVNULL)


def print_profile(path: Path, top: int = 25) -> None:
    """The functions with the most samples on the stack (inclusive) and at its top (self), from py-spy's
    collapsed stacks (`frame;frame;... count` per line)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack.startswith("thread ("):  # `--threads`: its name first; alone when no Python frame was seen
            stack = stack.partition(";")[2] or "(no Python frame)"
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"profile: {total} samples ({total / 100:.1f} s at 100 Hz)")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"  top {top} by {title}:")
        for frame, n in counts.most_common(top):
            print(f"    {n / total * 100:5.1f}%  {frame}")


# -- where a process's CPU goes, by thread ------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """CPU seconds (user, system) so far of each of the process's threads, by native thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[int, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds[int(task.name)] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
    return seconds


def thread_names(pid: int) -> dict[int, str]:
    """Python's name for each thread (py-spy's dump prints `Thread <tid> (...): "<name>"`)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"], capture_output=True, text=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', out, re.M)}


def print_thread_cpu(
    pid: int, before: dict[int, tuple[float, float]], seconds: float, names: dict[int, str], top: int = 12
) -> None:
    """Each thread's share of a core since `before` (all CPU, the database's C code and the kernel's included,
    which py-spy's GIL samples miss), the busiest first, and how much of it the kernel's. `names`:
    thread_names() (read before a profiler attaches: py-spy cannot dump a process it is recording)."""
    after = thread_cpu(pid)
    used = {
        tid: (user - before.get(tid, (0.0, 0.0))[0], system - before.get(tid, (0.0, 0.0))[1])
        for tid, (user, system) in after.items()
    }
    print(f"CPU by thread over {seconds:.0f} s (% of a core: all, of which system):")
    for tid, (user, system) in sorted(used.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"  {(user + system) / seconds * 100:5.2f} {system / seconds * 100:5.2f}  {names.get(tid, '?')} ({tid})")
