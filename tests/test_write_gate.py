"""The SQLite write gate (models/db.py) is held from `BEGIN IMMEDIATE` to the transaction's end, however it
ends: a commit or rollback, and also a connection the pool invalidates mid-transaction (an error on it) or
resets when it comes back still inside one. A gate left held would stall every later writer of the process,
the lease renewal included, for good. SQLite only (PostgreSQL has no gate: the tests say so, not skip)."""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlalchemy.engine import Engine

from orchestry.models.db import make_sessionmaker

from conftest import DB_KIND


def other_thread_writes(engine: Engine, within: float) -> bool:
    """Whether a write transaction from another thread gets through within `within` seconds."""
    done = threading.Event()

    def write() -> None:
        with engine.connect().execution_options(orchestry_lock_wait_ms=int(within * 1000)) as conn, conn.begin():
            conn.execute(text("SELECT 1"))
        done.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    thread.join(within + 5)
    return done.is_set()


def test_a_connection_invalidated_mid_transaction_leaves_the_gate_free(engine: Engine) -> None:
    conn = engine.connect()
    trans = conn.begin()  # BEGIN IMMEDIATE: the gate is taken (SQLite), the write lock too
    conn.execute(text("SELECT 1"))
    conn.invalidate()  # an error on the connection: the pool discards it, its transaction is gone
    trans.rollback()  # what a session does next (nothing reaches the database: the connection is gone)
    conn.close()
    assert other_thread_writes(engine, within=2.0), f"the gate stayed held ({DB_KIND})"
    with make_sessionmaker(engine).begin() as session:  # the same thread too, on a fresh connection
        session.execute(text("SELECT 1"))


def test_a_connection_reset_by_the_pool_inside_a_transaction_leaves_the_gate_free(engine: Engine) -> None:
    conn = engine.connect()
    conn.begin()
    conn.execute(text("SELECT 1"))
    # The DBAPI connection goes back to the pool without the Connection ending its transaction (as when a
    # Connection is garbage collected): the pool's reset rolls it back.
    fairy = conn.connection
    conn._dbapi_connection = None  # detach the fairy from the Connection, as garbage collection does
    fairy._checkin()
    assert other_thread_writes(engine, within=2.0), f"the gate stayed held ({DB_KIND})"
