"""Engines and sessions: the one place that knows the differences between SQLite and PostgreSQL.

- URLs are normalised once: `postgresql://` means psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3).
- SQLite: foreign keys on, WAL, a busy timeout, and `BEGIN IMMEDIATE` so that two writers queue up
  instead of failing with "database is locked" when both upgrade a read transaction. Sessions made by
  `make_read_sessionmaker` (the API's GETs) begin deferred instead: under WAL a reader takes no lock, so
  reads never queue behind writers, and writers (lease renewal first) never queue behind reads.
- PostgreSQL: a statement timeout, so no request or job hangs on a lock forever, and an idle-in-transaction
  timeout, so the server ends the session of a controller paused inside a transaction (SIGSTOP, a VM
  freeze) and its row locks go with it: a new leader's first writes (requeueing the old term's jobs) would
  otherwise wait on that paused process for as long as it stays paused. No transaction here spans slow work.
- An engine with the `LOCK_WAIT_MS` execution option (the API's) waits at most that long for a lock or a
  statement, on either database: a request answers 503 within its limits instead of queueing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

STATEMENT_TIMEOUT_MS = 15_000
IDLE_IN_TRANSACTION_MS = 5_000
READ_ONLY = "orchestry_read_only"  # an execution option: this connection's transactions only read
LOCK_WAIT_MS = "orchestry_lock_wait_ms"  # an execution option: wait at most this long for a lock
PRIORITY = "orchestry_priority"  # an execution option: this engine's writes go first (the lease's)
SQLITE_BUSY_MS = 30_000  # the lock wait of everything else (jobs, sweeps, the lease) on SQLite


def normalize_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _sqlite_pragmas(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        options = (
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        )
        connect_args = {"options": options, "connect_timeout": 5}
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True, **kwargs)
        _postgresql_waits(engine)
        return engine
    return create_engine(parsed, **kwargs)


def _postgresql_waits(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        wait = conn.get_execution_options().get(LOCK_WAIT_MS)
        if wait is not None:  # the transaction's first statement: SET LOCAL lasts until it ends
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait)}")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(wait)}")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cur.close()
        record.info[_BUSY_MS] = SQLITE_BUSY_MS

    gate = _gate_of(engine.url.database or "")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        wait_ms = int(options.get(LOCK_WAIT_MS, SQLITE_BUSY_MS))
        # Pooled connections serve the API and the controller in turn, with different lock waits: set it when
        # it differs from the one this connection has (a statement fewer in nearly every transaction).
        if conn.info.get(_BUSY_MS) != wait_ms:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {wait_ms}")
            conn.info[_BUSY_MS] = wait_ms
        if options.get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
            return
        if not gate.acquire(bool(options.get(PRIORITY)), wait_ms / 1000):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        conn.info[_GATED] = True
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            conn.info.pop(_GATED, None)
            gate.release()
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        if conn.invalidated:  # its `info` cannot be read any more; the invalidation released the gate
            return
        if conn.info.pop(_GATED, None):
            gate.release()

    # A transaction can also end without a commit or rollback event: the pool resets a connection checked in
    # (or garbage collected) inside one, or invalidates it after an error (its `info`, where the flag lives,
    # is then cleared on the next checkout). Each of those ends SQLite's write lock: the gate goes with it.
    @event.listens_for(engine, "reset")
    def _on_reset(_dbapi_conn: Any, record: Any, _state: Any) -> None:
        if record.info.pop(_GATED, None):
            gate.release()

    @event.listens_for(engine, "invalidate")
    @event.listens_for(engine, "close")
    def _on_gone(_dbapi_conn: Any, record: Any, *_: Any) -> None:
        if record.info.pop(_GATED, None):
            gate.release()


class WriteGate:
    """This process's SQLite writers take turns here before `BEGIN IMMEDIATE`, the lease's first.

    SQLite's own wait for its write lock is a poll (sleeps of up to 100 ms between tries): under many
    writers, one that polls can lose the lock again and again, and a lease renewal that loses for 2 s
    lapses (a lone node stepped down three times during 1,000 DELETEs). Here waiters are woken as soon as
    the lock is free, and a waiting `PRIORITY` writer (the lease) goes before every other. Reentrant per
    thread, so a thread that nests write transactions waits for SQLite as before, not for itself."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._urgent = 0

    def acquire(self, priority: bool, timeout: float) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            self._urgent += priority
            try:
                if not self._cond.wait_for(lambda: self._owner is None and (priority or not self._urgent), timeout):
                    return False
            finally:
                self._urgent -= priority
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth <= 0:
                self._owner, self._depth = None, 0
                self._cond.notify_all()


_GATED = "orchestry_gated"
_BUSY_MS = "orchestry_busy_ms"  # the busy_timeout this SQLite connection has (set at connect: 30000)
_gates: dict[str, WriteGate] = {}
_gates_lock = threading.Lock()


def _gate_of(database: str) -> WriteGate:
    """One gate per database file in this process (the lease's engine and the main one share it)."""
    key = str(Path(database).resolve()) if database and database != ":memory:" else f"memory:{id(object())}"
    with _gates_lock:
        return _gates.setdefault(key, WriteGate())


def lease_engine(engine: Engine) -> Engine:
    """An engine of one connection on the same database, for the leader lease alone (an in-memory SQLite
    database cannot be opened twice: it keeps the shared engine)."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return engine
    return make_engine(url, pool_size=1, max_overflow=0, execution_options={PRIORITY: True})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_read_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that only read: on SQLite their transactions take no write lock (see above)."""
    return sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)


def reads_of(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """Read-only sessions on the engine of `sessions`."""
    bind: Engine = sessions.kw["bind"]
    return make_read_sessionmaker(bind)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
