"""Leadership that load cannot starve (issue 10): a lone node keeps its lease while another connection
holds a write transaction shorter than the lease, and while the API is hammered. Real database (SQLite or
PostgreSQL), the controller's own wiring of the lease, the real Flask app on the same engine."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from test_jobs_converge import FakeRuntime

from orchestry.config import load_settings
from orchestry.controller.leadership import Leadership
from orchestry.controller.node import Controller
from orchestry.models.db import make_sessionmaker
from orchestry.web.app import create_app

from conftest import wait_for

LEASE, RENEW = 3.0, 0.5


class Watched:
    """The controller's lease loop, with its elections and step-downs counted (nothing else started)."""

    def __init__(self, engine: Engine, db_url: str) -> None:
        settings = load_settings(
            {"database_url": db_url, "nginx": "off", "lease_seconds": LEASE, "renew_seconds": RENEW, "node_id": "n1"}
        )
        self.settings = settings
        self.controller = Controller(settings, engine, FakeRuntime())  # type: ignore[arg-type]
        self.lease: Leadership = self.controller.leadership
        self.terms: list[int] = []
        self.step_downs: list[int] = []
        self.lease.on_elected = self.terms.append
        self.lease.on_deposed = self.step_downs.append

    def __enter__(self) -> Watched:
        self.lease.start()
        wait_for(lambda: self.lease.leading, 10)
        return self

    def __exit__(self, *_: Any) -> None:
        self.lease.stop()
        own = getattr(self.controller, "lease_engine", None)
        if own is not None and own is not self.controller.engine:
            own.dispose()


def test_a_lone_node_keeps_its_lease_while_a_write_is_held(engine: Engine, db_url: str) -> None:
    with Watched(engine, db_url) as node:
        with engine.begin() as conn:  # a long write (SQLite: the database's one write lock)
            conn.execute(text("UPDATE controller_nodes SET version = version"))
            time.sleep(LEASE - 1.0)  # shorter than the lease by a second: the renewal waits, in time
        time.sleep(2 * RENEW)
        assert (node.terms, node.step_downs, node.lease.leading) == ([1], [], True)


def spec(name: str) -> str:
    ports = "  ports: [{containerPort: 8080}]\n"
    return f"apiVersion: v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  image: busybox\n" + ports


def test_a_lone_node_keeps_its_lease_while_the_api_is_hammered(engine: Engine, db_url: str) -> None:
    with Watched(engine, db_url) as node:
        api = create_app(node.settings, engine)
        client = api.test_client()
        for i in range(50):
            resp = client.post("/api/v1/apps", data=spec(f"app{i}"), content_type="application/yaml")
            assert resp.status_code == 201, resp.get_data(as_text=True)
        stop = time.monotonic() + 3 * LEASE
        answered: list[int] = []

        def hammer() -> None:
            mine = api.test_client()
            while time.monotonic() < stop:
                answered.append(mine.get("/api/v1/apps").status_code)

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answered and set(answered) == {200}
        assert (node.terms, node.step_downs, node.lease.leading) == ([1], [], True), f"{len(answered)} requests"


def test_a_database_error_while_taking_office_is_one_line(
    engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error during an election is an outage, not a bug: one warning line, no traceback."""
    from sqlalchemy.exc import OperationalError

    def locked(term: int) -> None:
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked\nsecond line"))

    lease = Leadership(
        make_sessionmaker(engine),
        node="n1",
        address="http://x",
        lease_seconds=LEASE,
        renew_seconds=RENEW,
        on_elected=locked,
        on_deposed=lambda term: None,
    )
    with caplog.at_level("WARNING", logger="orchestry.leader"):
        lease.tick()
    failed = [r for r in caplog.records if r.getMessage() == "starting as leader failed; stepping down"]
    assert len(failed) == 1 and failed[0].exc_info is None
    assert failed[0].error == "(builtins.Exception) database is locked"  # type: ignore[attr-defined]
    assert not lease.leading


def test_a_lone_node_keeps_its_lease_among_many_writers(engine: Engine, db_url: str) -> None:
    """1,000 DELETEs from 8 clients once made a lone SQLite node step down three times: its renewal kept
    losing the write lock to the other writers. Here 12 threads write in short transactions, back to back."""
    from sqlalchemy import text

    with Watched(engine, db_url) as node:
        stop = time.monotonic() + 3 * LEASE
        wrote: list[int] = []

        def write() -> None:
            n = 0
            while time.monotonic() < stop:
                with engine.begin() as conn:
                    conn.execute(text("UPDATE controller_nodes SET version = version"))
                    time.sleep(0.005)  # a short transaction, as a job's step or an API write
                n += 1
            wrote.append(n)

        threads = [threading.Thread(target=write) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (node.terms, node.step_downs, node.lease.leading) == ([1], [], True), f"{sum(wrote)} writes"
