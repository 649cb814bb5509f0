"""Work that finds nothing changed writes nothing (issue 10): an idle leader, apps registered and nothing
happening, changes no row but its lease and heartbeat, and the job store's next run time of each sweep that
ran. The 0.5 s health tick once rewrote its next run time in `apscheduler_jobs` too, and the dispatcher's poll
took the write lock four times a second.
Real database (SQLite or PostgreSQL), real Docker engine (no container of this cluster), nginx off."""

from __future__ import annotations

import collections
import re
import time
import uuid
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestry.config import load_settings
from orchestry.controller.node import Controller
from orchestry.runtime.docker_engine import DockerEngine
from orchestry.web.app import create_app

from conftest import wait_for

WRITE = re.compile(r"^\s*(UPDATE|INSERT INTO|DELETE FROM)\s+(\w+)", re.IGNORECASE)


def count_changes(engine: Engine, changed: collections.Counter[str]) -> None:
    @event.listens_for(engine, "after_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        found = WRITE.match(statement)
        if found and cursor.rowcount and cursor.rowcount > 0:
            changed[found.group(2).lower()] += 1


def test_an_idle_leader_changes_nothing_but_its_lease(engine: Engine, db_url: str, tmp_path: Any) -> None:
    settings = load_settings(
        {"database_url": db_url, "nginx": "off", "data_dir": str(tmp_path), "cluster_name": f"i{uuid.uuid4().hex[:8]}"}
    )
    api = create_app(settings, engine).test_client()
    for i in range(5):
        doc = f"apiVersion: v1\nkind: App\nmetadata: {{name: a{i}}}\nspec:\n  image: busybox\n"
        assert api.post("/api/v1/apps", data=doc + "  ports: [{containerPort: 80}]\n", content_type="application/yaml")
    runtime = DockerEngine()
    controller = Controller(settings, engine, runtime)
    changed: collections.Counter[str] = collections.Counter()
    count_changes(engine, changed)
    if controller.lease_engine is not engine:
        count_changes(controller.lease_engine, changed)
    controller.start()
    try:
        wait_for(lambda: controller.leadership.leading, 15)
        time.sleep(3)  # the first round of every sweep (reconcile, health, metrics, autoscale) settles
        changed.clear()
        time.sleep(8)
        assert controller.leadership.leading
        # health_probe: each node's database write check, rolled back (it changes nothing)
        allowed = {"leader_lease", "controller_nodes", "apscheduler_jobs", "health_probe"}
        assert set(changed) <= allowed, dict(changed)
        # the job store's next run times: one per sweep run (8 s: metrics 4, autoscale 2, reconcile 1), never
        # the 0.5 s health tick's 16
        assert changed["apscheduler_jobs"] <= 9, dict(changed)
        # the heartbeat: once a second (8), not at every renewal (16 at renew_seconds 0.5)
        assert changed["controller_nodes"] <= 10, dict(changed)
    finally:
        controller.stop()
        runtime.close()
