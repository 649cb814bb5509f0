"""Several real `orchestry serve` nodes on one dedicated PostgreSQL server, and the audit of their logs.

Used by tests/test_chaos.py and bench/chaos. The server is our own (never the one other tests share),
since the chaos stops and restarts it; it logs every modifying statement with the connecting node's name
(`application_name`), so a test can prove that a deposed node wrote nothing.

Nodes log JSON (`log_format: json`): the lease loop's `elected leader` / `leading: scheduler running` /
`stepped down` lines and the jobs' `runtime action` lines are the record the audit reads. The audit
functions at the end are pure (records in, figures out) and tested with tables in test_cluster_audit.py.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from pg_server import _bin, free_port

NOT_ORCHESTRY_TABLES = ("leader_lease", "controller_nodes", "health_probe")  # a follower's own writes: its
# lease attempt, heartbeat, and the component probe's write check (always rolled back)


# -- a dedicated PostgreSQL server --------------------------------------------------------------------------------


@dataclass
class DedicatedPg:
    """A throwaway PostgreSQL server of our own, which may be stopped and started again (same port, same data)."""

    directory: Path
    port: int
    log_statements: bool = False

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "log"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def init(self) -> None:
        subprocess.run(
            self._as_postgres(
                _bin("initdb"), "-D", str(self.data), "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8"
            ),
            check=True,
            capture_output=True,
        )
        conf = [
            f"port = {self.port}",
            f"unix_socket_directories = '{self.directory}'",
            "listen_addresses = '127.0.0.1'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 300",
            "log_line_prefix = '%m [%a] '",
        ]
        if self.log_statements:
            conf.append("log_statement = 'mod'")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n".join(conf) + "\n")

    def start(self) -> None:
        subprocess.run(
            self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "start"),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            self._as_postgres(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"), capture_output=True
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def create_database(self, name: str) -> str:
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def modifying_statements(self) -> list[tuple[datetime, str, str]]:
        """(time, application name, statement) of every INSERT/UPDATE/DELETE logged so far."""
        out: list[tuple[datetime, str, str]] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line[:1] in ("\t", " ") and out:  # a statement's next line
                at, app, stmt = out[-1]
                out[-1] = (at, app, f"{stmt} {line.strip()}".strip())
                continue
            # 2026-11-27 08:01:02.345 UTC [node-a] LOG:  statement: UPDATE ...
            if "statement: " not in line or " [" not in line:
                continue
            stamp, _, rest = line.partition(" [")
            app, _, rest = rest.partition("] ")
            with contextlib.suppress(ValueError):
                at = datetime.strptime(stamp.replace(" UTC", " +0000"), "%Y-%m-%d %H:%M:%S.%f %z")
                out.append((at, app, rest.partition("statement: ")[2]))
        return out


@contextlib.contextmanager
def dedicated_pg(log_statements: bool = False) -> Iterator[DedicatedPg]:
    directory = Path(tempfile.mkdtemp(prefix="orchestry-chaos-pg-"))
    os.chmod(directory, 0o777)
    server = DedicatedPg(directory, free_port(), log_statements)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


# -- nodes ---------------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One `orchestry serve` process (restartable under the same name and port)."""

    node_id: str
    port: int
    db_url: str
    workdir: Path
    cluster: str
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped
    _offset: int = 0
    _records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.node_id}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRY_")}
        env.update(
            XDG_CONFIG_HOME=str(self.workdir / "config"),
            XDG_DATA_HOME=str(self.workdir / "xdg"),
            ORCHESTRY_DATA_DIR=str(self.workdir / self.node_id),
            ORCHESTRY_DATABASE_URL=f"{self.db_url}?application_name={self.node_id}",
            ORCHESTRY_CLUSTER_NAME=self.cluster,
            ORCHESTRY_NODE_ID=self.node_id,
            ORCHESTRY_NGINX="off",
            ORCHESTRY_LOG_FORMAT="json",
            **self.extra_env,
        )
        return env

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestry", "serve", "--port", str(self.port)],
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.stopped = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_answering(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.node_id} exited:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.node_id} did not answer within {timeout:.0f} s:\n{self.tail()}")

    def signal(self, sig: signal.Signals) -> float:
        """Send a signal; returns the wall-clock time it was sent."""
        assert self.proc is not None
        at = time.time()
        os.kill(self.proc.pid, sig)
        if sig == signal.SIGSTOP:
            self.stopped = True
        elif sig == signal.SIGCONT:
            self.stopped = False
        if sig == signal.SIGKILL:
            self.proc.wait()
        return at

    def terminate(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.stopped:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.stopped = False
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def records(self) -> list[dict[str, Any]]:
        """This node's JSON log lines (all of its lives), each with `node` set. Read incrementally: callers
        poll this many times a second while a failover runs."""
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
            self._offset += end
            for line in chunk[:end].decode(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        rec = json.loads(line)
                        rec.setdefault("node", self.node_id)
                        self._records.append(rec)
        return list(self._records)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


class Cluster:
    """`size` nodes on one database; the helpers a chaos run needs."""

    def __init__(self, db_url: str, workdir: Path, size: int = 3, extra_env: dict[str, str] | None = None) -> None:
        self.db_url = db_url
        self.cluster = "chaos" + uuid.uuid4().hex[:8]
        self.nodes = [
            Node(f"node-{chr(ord('a') + i)}", free_port(), db_url, workdir, self.cluster, dict(extra_env or {}))
            for i in range(size)
        ]
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url, pool_pre_ping=True, connect_args={"connect_timeout": 2})
        return self._engine

    def start(self, timeout: float = 90) -> None:
        first, *rest = self.nodes
        first.start()  # the first one migrates the schema; the others then start at once
        first.wait_answering(timeout)
        for node in rest:
            node.start()
        for node in rest:
            node.wait_answering(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.terminate()
        if self._engine is not None:
            self._engine.dispose()

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def lease(self) -> tuple[str | None, int, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT holder, term, expires_at FROM leader_lease")).one_or_none()
        return (row[0], int(row[1]), row[2]) if row else (None, 0, None)

    def records(self) -> list[dict[str, Any]]:
        return sorted((r for n in self.nodes for r in n.records()), key=lambda r: str(r.get("ts", "")))

    def wait_leading(self, after: float, timeout: float = 30, exclude: str | None = None) -> tuple[str, int, float]:
        """The first `leading: scheduler running` logged after `after` (wall clock): (node, term, time)."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in leading_lines(self.records()):
                if rec[2] > after and rec[0] != exclude:
                    return rec
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n.node_id}\n{n.tail(15)}" for n in self.nodes)
                raise AssertionError(f"no node started leading within {timeout:.0f} s\n{tails}")
            time.sleep(0.05)

    def leader(self, timeout: float = 30) -> Node:
        """The node whose lease is live and whose scheduler runs."""
        deadline = time.monotonic() + timeout
        while True:
            holder, term, _ = self.lease()
            if holder is not None and any(n == holder and t == term for n, t, _ in leading_lines(self.records())):
                return self.node(holder)
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader within {timeout:.0f} s (lease: {holder}, term {term})")
            time.sleep(0.05)

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the first node that answers (as the CLI fails over)."""
        last: Exception | None = None
        for node in self.nodes:
            if not node.alive or node.stopped:
                continue
            try:
                return httpx.request(method, node.url + path, timeout=10, **kwargs)
            except httpx.TransportError as exc:
                last = exc
        raise RuntimeError(f"no node answered {method} {path}: {last}")


# -- the audit: pure functions over log records -----------------------------------------------------------------


def ts(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(rec["ts"])).timestamp()


def leading_lines(records: Iterable[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """(node, term, time) of every `leading: scheduler running` line: a failover's end."""
    return [(str(r["node"]), int(r["term"]), ts(r)) for r in records if r.get("msg") == "leading: scheduler running"]


@dataclass(frozen=True)
class Term:
    node: str
    term: int
    start: float  # acquired (the database's clock; one machine, so comparable with wall-clock times)
    end: float | None  # the fence's end as the node logged it on stepping down; None if it never did


def terms(records: Iterable[dict[str, Any]], ends: dict[tuple[str, int], float] | None = None) -> dict[int, Term]:
    """Each term's holder and validity, from `elected leader` and `stepped down` lines. `ends` adds known
    upper bounds for terms whose node never logged a step-down (it was SIGKILLed at that time)."""
    found: dict[int, Term] = {}
    stepped: dict[tuple[str, int], float] = dict(ends or {})
    for r in records:
        if r.get("msg") == "elected leader":
            term = int(r["term"])
            start = datetime.fromisoformat(str(r["acquired_at"])).timestamp()
            found[term] = Term(str(r["node"]), term, start, None)
        elif r.get("msg") == "stepped down" and r.get("fence_ended") is not None:
            key = (str(r["node"]), int(r["term"]))
            stepped[key] = min(stepped.get(key, float("inf")), float(r["fence_ended"]))
    return {t: Term(v.node, t, v.start, stepped.get((v.node, t))) for t, v in found.items()}


def overlapping_terms(found: dict[int, Term]) -> list[tuple[int, int]]:
    """Pairs of terms whose validity overlaps (two leaders at once). A term with no known end is taken to
    last until the next one began: only the fence's logged end can show an overlap."""
    ordered = sorted(found.values(), key=lambda t: t.term)
    out = []
    for i, a in enumerate(ordered):
        out += [(a.term, b.term) for b in ordered[i + 1 :] if a.end is not None and a.end > b.start]
    return out


def actions(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every runtime action as it began (node, term, job, action, target, began)."""
    return [r for r in records if r.get("msg") == "runtime action"]


def actions_outside_term(acts: Sequence[dict[str, Any]], found: dict[int, Term]) -> list[dict[str, Any]]:
    """Actions that began outside their term: before it was acquired, after its fence ended, or once a later
    term had begun (whatever the node believed), or by a node that did not hold that term."""
    starts = sorted((t.start, t.term) for t in found.values())
    out = []
    for act in acts:
        term, began, node = int(act["term"]), float(act["began"]), str(act["node"])
        own = found.get(term)
        next_start = min((s for s, t in starts if t > term), default=float("inf"))
        if (
            own is None
            or own.node != node
            or began < own.start
            or (own.end is not None and began > own.end)
            or began >= next_start
        ):
            out.append(act)
    return out


def jobs_run_twice_with_effect(records: Iterable[dict[str, Any]]) -> list[int]:
    """Jobs that started the same slot under two terms and got two different containers while the first was
    still there: the retry redid the first run's work instead of adopting it. A slot stopped in between (the
    desired count went down and up again while the job ran: it converges to the app's current count) is
    started again by right, and does not count. Records in the order they happened."""
    last: dict[tuple[int, str], tuple[int, str]] = {}  # (job, slot) -> (term, container) of its last start
    stopped: set[tuple[int, str]] = set()  # (job, slot) whose last started container was stopped since
    twice: set[int] = set()
    for r in records:
        if r.get("msg") != "runtime action done":
            continue
        target = str(r.get("target"))
        if r.get("action") == "stop":
            stopped.update(key for key in last if key[1] == target)
            continue
        if r.get("action") != "start" or not r.get("container"):
            continue
        key, now = (int(r["job_id"]), target), (int(r["term"]), str(r["container"]))
        before = last.get(key)
        if before is not None and before[0] != now[0] and before[1] != now[1] and key not in stopped:
            twice.add(key[0])
        last[key] = now
        stopped.discard(key)
    return sorted(twice)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
