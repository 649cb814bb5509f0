"""The schema: migrations build it on an empty database, and they agree with the models."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from orchestry.models import Base
from orchestry.models.db import make_engine
from orchestry.models.schema import current_revision, head_revision, include_object, upgrade

from conftest import ROOT, orchestry_cmd


def _diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_object": include_object, "compare_type": True})
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_matches_the_models(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert _diff(empty_db_url) == []


def test_apschedulers_own_table_is_not_a_difference(empty_db_url: str) -> None:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    engine = make_engine(empty_db_url)
    upgrade(engine)
    store = SQLAlchemyJobStore(engine=engine)
    store.start(None, "default")  # creates apscheduler_jobs, as the leader's scheduler does
    store.shutdown()
    engine.dispose()
    assert _diff(empty_db_url) == []


def test_upgrade_twice_is_harmless(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_alembic_command_line_upgrades_an_empty_database(empty_db_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={empty_db_url}", "upgrade", "head"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert _diff(empty_db_url) == []


def test_orchestry_db_upgrade_then_current(empty_db_url: str) -> None:
    env_cmd = ["--database-url", empty_db_url]
    up = subprocess.run(orchestry_cmd("db", "upgrade", *env_cmd), capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "up to date" in up.stdout
    cur = subprocess.run(orchestry_cmd("db", "current", "--json", *env_cmd), capture_output=True, text=True)
    assert cur.returncode == 0, cur.stderr
    assert f'"current": "{head_revision()}"' in cur.stdout


def test_db_current_on_an_unreachable_database_is_one_line() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    out = subprocess.run(orchestry_cmd("db", "current", "--database-url", url), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("orchestry: cannot reach the database")
    assert "Traceback" not in out.stderr


def test_upgrade_keeps_rows_written_by_the_previous_schema(empty_db_url: str) -> None:
    from sqlalchemy import text

    engine = make_engine(empty_db_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO apps (name, status, desired_replicas, revision, created_at, updated_at) "
                "VALUES ('old', 'running', 1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO replicas (app_id, revision, slot, name, state, health, consecutive_failures, "
                "consecutive_successes, created_at, updated_at) SELECT id, 1, 1, 'old-1', 'running', "
                "'unknown', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM apps"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name, drain_started_at FROM replicas")).one() == ("old-1", None)
    engine.dispose()
