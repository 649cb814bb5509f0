"""Component health (issue 17) and /health's database write check (issue 11).

The state machine is a table. /health is asked of an app whose database answers reads and refuses every
write (SQLite's query_only, PostgreSQL's read-only transactions: a read-only replica after a failover). A live
`orchestry serve` whose nginx binary is missing logs the outage once, reports it on /health, /metrics and
`orchestry status`, and keeps serving the API (degraded, 200)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from orchestry.config import load_settings
from orchestry.controller.components import ComponentMonitor
from orchestry.models.db import make_engine
from orchestry.web.app import create_app
from orchestry.workflows.components import ComponentState, Step, observe, overall

from conftest import start_server, stop_server, wait_for

UNSEEN = ComponentState()
UP = ComponentState(True, 0.0)
DOWN_AT_10 = ComponentState(False, 10.0, "refused", logged_at=10.0)


@pytest.mark.parametrize(
    ("state", "up", "now", "say", "after"),
    [
        (UNSEEN, True, 5.0, None, ComponentState(True, 5.0)),  # first seen up: nothing to say
        (UNSEEN, False, 5.0, "down", ComponentState(False, 5.0, "refused", 5.0)),  # first seen down: say it
        (UP, True, 50.0, None, UP),
        (UP, False, 10.0, "down", DOWN_AT_10),
        (DOWN_AT_10, False, 15.0, None, DOWN_AT_10),  # every 5 s while down: silent...
        (DOWN_AT_10, False, 69.9, None, DOWN_AT_10),
        (DOWN_AT_10, False, 70.0, "still down", ComponentState(False, 10.0, "refused", 70.0)),  # ...once a minute
        (DOWN_AT_10, True, 95.0, "recovered", ComponentState(True, 95.0)),
    ],
)
def test_state_machine(state: ComponentState, up: bool, now: float, say: str | None, after: ComponentState) -> None:
    step = observe(state, up, now, None if up else "refused")
    assert (step.say, step.state) == (say, after)


def test_an_outage_of_ten_minutes_checked_every_5_s_says_twelve_lines() -> None:
    state, said = UP, []
    for i in range(121):  # t = 0 .. 600 s down, then up
        step: Step = observe(state, False, float(5 * i), "refused")
        state = step.state
        said.append(step.say)
    step = observe(state, True, 605.0)
    said.append(step.say)
    assert said.count("down") == 1 and said.count("still down") == 10 and said[-1] == "recovered"
    assert step.down_for == 605.0


@pytest.mark.parametrize(
    ("components", "database_ok", "verdict"),
    [
        ({"nginx": True, "docker": True}, True, ("ok", 200)),
        ({}, True, ("ok", 200)),
        ({"nginx": None, "docker": True}, True, ("ok", 200)),  # not checked yet
        ({"nginx": False, "docker": True}, True, ("degraded", 200)),
        ({"nginx": True, "docker": False}, True, ("degraded", 200)),
        ({"nginx": True, "docker": True}, False, ("unavailable", 503)),
        ({"nginx": False, "database": False}, False, ("unavailable", 503)),
    ],
)
def test_overall(components: dict[str, bool | None], database_ok: bool, verdict: tuple[str, int]) -> None:
    assert overall(components, database_ok) == verdict


def test_the_monitor_logs_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    monitor = ComponentMonitor(clock=lambda: now[0])
    caplog.set_level("INFO", logger="orchestry.components")
    for t in range(0, 130, 5):
        now[0] = float(t)
        monitor.report("nginx", False, "the nginx binary 'nginx' was not found")
    now[0] = 131.0
    monitor.report("nginx", True)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "nginx is down"),
        ("WARNING", "nginx is still down"),
        ("WARNING", "nginx is still down"),
        ("INFO", "nginx recovered"),
    ]
    assert monitor.snapshot()["nginx"] == ComponentState(True, 131.0)


def read_only_engine(url: str) -> Any:
    """An engine on which reads work and every write fails. PostgreSQL: read-only transactions (a replica
    after a failover). SQLite (whose every transaction takes the write lock, so `query_only` would stop reads
    too): a trigger on every table that aborts each insert, update and delete, like a full disk."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            tables = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).scalars()
            for table in list(tables):
                for op in ("INSERT", "UPDATE", "DELETE"):
                    conn.exec_driver_sql(
                        f'CREATE TRIGGER "no_{op}_{table}" BEFORE {op} ON "{table}" '
                        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
                    )
        return engine

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_conn.commit()
        cur.close()

    return engine


def test_health_reports_a_database_that_reads_but_refuses_every_write(db_url: str) -> None:
    engine = read_only_engine(db_url)
    app = create_app(load_settings({"database_url": db_url, "node_id": "n1"}), engine)
    client = app.test_client()
    assert client.get("/api/v1/apps").status_code == 200  # reads work
    spec = "apiVersion: v1\nkind: App\nmetadata: {name: x}\nspec: {image: busybox}\n"
    assert not client.post("/api/v1/apps", data=spec, content_type="application/yaml").status_code < 300
    resp = client.get("/health")
    body = resp.get_json()
    assert resp.status_code == 503, body
    assert (body["status"], body["database"]) == ("unavailable", "read-only")
    assert (body["database_read"], body["database_write"]) == ("ok", "failed")
    assert body["components"]["database"]["state"] == "down"
    assert "write" in body["components"]["database"]["error"]
    engine.dispose()


def test_health_is_ok_on_a_working_database_and_degraded_with_a_component_down(db_url: str) -> None:
    seen = {"nginx": ComponentState(False, time.monotonic() - 30, "the nginx binary 'nginx' was not found")}
    engine = make_engine(db_url)
    app = create_app(load_settings({"database_url": db_url, "node_id": "n1"}), engine, components=lambda: seen)
    client = app.test_client()
    body = client.get("/health").get_json()
    assert (body["status"], body["database_read"], body["database_write"]) == ("degraded", "ok", "ok")
    assert body["components"]["nginx"]["state"] == "down" and body["components"]["nginx"]["for_seconds"] >= 30
    assert client.get("/health").status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'orchestry_component_up{component="nginx"} 0.0' in metrics
    seen["nginx"] = ComponentState(True, time.monotonic())
    assert client.get("/health").get_json()["status"] == "ok"
    assert 'orchestry_component_up{component="nginx"} 1.0' in client.get("/metrics").get_data(as_text=True)
    engine.dispose()


def test_a_missing_nginx_is_logged_once_and_shown_everywhere(db_url: str, tmp_path: Path) -> None:
    """Issue 17's first observation: two warnings every 5 s for as long as it ran, and no hint anywhere."""
    server = start_server(db_url, tmp_path, {"ORCHESTRY_NGINX_BINARY": str(tmp_path / "no-nginx")})
    try:

        def seen() -> dict[str, str]:
            return {n: c["state"] for n, c in server.http.get("/health").json()["components"].items()}

        wait_for(lambda: seen() == {"database": "up", "docker": "up", "nginx": "down"}, 30)
        health = server.http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["components"]["docker"]["state"] == "up"
        time.sleep(11)  # two more rounds of the leader's nginx job and several of the route mirror
        log = server.log()
        assert log.count("nginx is down") == 1, log
        assert "hint=`orchestry doctor` names what is missing" in log
        assert "nginx is not serving the current configuration" not in log
        assert "nginx is not running its configuration" not in log
        assert 'orchestry_component_up{component="nginx"} 0.0' in server.http.get("/metrics").text
        assert 'orchestry_component_up{component="docker"} 1.0' in server.http.get("/metrics").text
        status = server.cli("status")
        assert status.returncode == 1
        assert "degraded" in status.stdout and "nginx" in status.stdout and "no-nginx" in status.stdout
        events = server.http.get("/api/v1/events", params={"type": "nginx"}).json()["events"]
        assert len(events) == 1
    finally:
        stop_server(server)


def test_docker_unreachable_is_reported_once_and_degrades(db_url: str, tmp_path: Path) -> None:
    """Docker's socket gone (an engine restart, a broken DOCKER_HOST): the node keeps its API up, says so
    once, and shows it; the event stream's reconnects and the reconcile sweeps do not repeat it."""
    server = start_server(db_url, tmp_path, {"DOCKER_HOST": f"unix://{tmp_path}/docker.sock", "ORCHESTRY_NGINX": "off"})
    try:
        wait_for(lambda: server.http.get("/health").json()["components"].get("docker", {}).get("state") == "down", 20)
        body = server.http.get("/health").json()
        assert (body["status"], body["components"]["nginx"]["state"]) == ("degraded", "off")
        time.sleep(8)  # event stream reconnects every second, the probe every 5 s, a reconcile sweep
        log = server.log()
        assert log.count("docker is down") == 1, log
        assert log.count("docker event stream broke") <= 1, log
        assert "reconcile skipped" not in log and "Traceback" not in log
        assert 'orchestry_component_up{component="docker"} 0.0' in server.http.get("/metrics").text
    finally:
        stop_server(server, remove_containers=False)


def test_health_shows_reasons_only_to_the_nodes_own_users(db_url: str) -> None:
    """/health is public: a remote caller without a token sees states, not error texts (hosts, paths)."""
    from orchestry.models.db import make_sessionmaker
    from orchestry.models.tokens import create_token

    seen = {"nginx": ComponentState(False, time.monotonic(), "the nginx binary '/opt/secret/nginx' was not found")}
    engine = make_engine(db_url)
    with make_sessionmaker(engine)() as db:
        _row, plain = create_token(db, "ops", "viewer")
        db.commit()
    app = create_app(load_settings({"database_url": db_url, "node_id": "n1"}), engine, components=lambda: seen)
    client = app.test_client()
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    anonymous = client.get("/health", environ_base=remote).get_json()
    assert anonymous["components"]["nginx"]["state"] == "down" and anonymous["components"]["nginx"]["error"] is None
    with_token = client.get("/health", environ_base=remote, headers={"Authorization": f"Bearer {plain}"})
    assert "/opt/secret/nginx" in with_token.get_json()["components"]["nginx"]["error"]
    assert "/opt/secret/nginx" in client.get("/health").get_json()["components"]["nginx"]["error"]  # loopback
    engine.dispose()
