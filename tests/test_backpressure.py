"""Back-pressure, not collapse (issue 10): while another transaction holds the lock a write needs, the API
answers 503 with Retry-After within its lock wait (5 s) instead of queueing behind it, reads still answer,
and the retried request (same Idempotency-Key) is applied once. Real SQLite or PostgreSQL."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from orchestry.config import load_settings
from orchestry.models import jobs as jobq
from orchestry.models.db import make_sessionmaker
from orchestry.web.app import API_LOCK_WAIT_MS, create_app

HOLD_SECONDS = API_LOCK_WAIT_MS / 1000 + 3


def test_a_locked_database_answers_503_in_time_and_the_retry_is_applied_once(engine: Engine, db_url: str) -> None:
    api = create_app(load_settings({"database_url": db_url}), engine)
    client = api.test_client()
    doc = "apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  image: busybox\n  ports: [{containerPort: 80}]\n"
    assert client.post("/api/v1/apps", data=doc, content_type="application/yaml").status_code == 201
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:  # a long write on the app's row (SQLite: the database's one write lock)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # a slow writer that is alive, not a paused controller's session
                conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            conn.execute(text("UPDATE apps SET desired_replicas = desired_replicas WHERE name = 'web'"))
            holding.set()
            done.wait(HOLD_SECONDS)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        began = time.monotonic()
        resp = client.post("/api/v1/apps/web/scale", json={"replicas": 2}, headers={"Idempotency-Key": "k1"})
        took = time.monotonic() - began
        assert resp.status_code == 503, resp.get_data(as_text=True)
        assert took < API_LOCK_WAIT_MS / 1000 + 1.5, took
        body = resp.get_json()
        assert body["error"] == "database_unavailable" and "database is busy" in body["detail"], body
        assert resp.headers["Retry-After"] == "2"
        assert client.get("/api/v1/apps").status_code == 200  # reads do not wait for the write lock
    finally:
        done.set()
        holder.join()
    again = client.post("/api/v1/apps/web/scale", json={"replicas": 2}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 202, again.get_data(as_text=True)
    repeat = client.post("/api/v1/apps/web/scale", json={"replicas": 2}, headers={"Idempotency-Key": "k1"})
    assert repeat.get_json()["job"]["id"] == again.get_json()["job"]["id"]
    with make_sessionmaker(engine)() as s:
        assert s.scalars(select(jobq.Job.kind).where(jobq.Job.app_name == "web")).all() == ["scale"]
