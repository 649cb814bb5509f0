"""Secrets: set through the API or the CLI, stored encrypted, resolved into the container's env at start,
never returned or shown: not by the API, events, jobs, logs or raw specs (issue 11, "Data")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from conftest import DB_KIND, LiveServer, assert_error, hello, post

VALUE = "s3cr3t-Value-7f1d9c"
SECRET_ENV = (
    "  environment:\n"
    "    - name: DB_PASSWORD\n      valueFrom: {secret: db-pw}\n"
    "    - name: PLAIN\n      value: visible-123\n"
)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_secrets_api_never_returns_a_value(live: LiveServer) -> None:
    created = live.http.put("/api/v1/secrets/db-pw", json={"value": VALUE})
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/api/v1/secrets/db-pw"
    replaced = live.http.put("/api/v1/secrets/db-pw", json={"value": VALUE})
    assert replaced.status_code == 200 and "Location" not in replaced.headers
    listed = live.http.get("/api/v1/secrets").json()
    assert [s["name"] for s in listed["secrets"]] == ["db-pw"]
    one = live.http.get("/api/v1/secrets/db-pw")
    for body in (created.text, replaced.text, json.dumps(listed), one.text):
        assert VALUE not in body and '"value"' not in body
    bad = assert_error(live.http.put("/api/v1/secrets/Bad Name", json={"value": "x"}), 422)
    assert "name" in bad["detail"]
    assert_error(live.http.put("/api/v1/secrets/ok", json={"value": 5}), 422)
    assert live.http.delete("/api/v1/secrets/db-pw").status_code == 204
    assert_error(live.http.delete("/api/v1/secrets/db-pw"), 404)
    events = live.http.get("/api/v1/events").json()["events"]
    assert {"secret.set", "secret.deleted"} <= {e["type"] for e in events}
    assert VALUE not in json.dumps(events)


def test_cli_sets_from_stdin_lists_and_deletes(live: LiveServer) -> None:
    out = live.cli("secret", "set", "api-key", stdin=VALUE.encode() + b"\n")
    assert out.returncode == 0 and "created" in out.stdout, out.stderr
    listed = live.cli("secret", "list")
    assert "api-key" in listed.stdout and VALUE not in listed.stdout
    assert live.cli("secret", "set", "api-key", "--value", "other").stdout.strip() == "secret api-key replaced"
    assert live.cli("secret", "delete", "api-key").returncode == 0
    missing = live.cli("secret", "delete", "api-key")
    assert missing.returncode != 0 and "api-key" in missing.stderr and "Traceback" not in missing.stderr


def test_a_secret_reaches_the_container_env_and_nothing_else(live: LiveServer) -> None:
    assert live.http.put("/api/v1/secrets/db-pw", json={"value": VALUE}).status_code == 201
    assert post(live, hello("sec", extra=SECRET_ENV)).status_code == 201
    job = live.wait_job(live.http.post("/api/v1/apps/sec/up", json={"replicas": 1}).json()["job"]["id"])
    assert job["status"] == "succeeded", job
    (box,) = live.containers("sec")
    env = box.inspect()["Config"]["Env"]
    assert f"DB_PASSWORD={VALUE}" in env and "PLAIN=visible-123" in env

    seen: list[Any] = [
        live.http.get("/api/v1/apps/sec/spec").text,
        live.http.get("/api/v1/apps/sec/spec", params={"raw": "true"}).text,
        live.http.get("/api/v1/apps/sec").text,
        live.http.get("/api/v1/events").text,
        live.http.get("/api/v1/jobs").text,
        live.http.get(f"/api/v1/jobs/{job['id']}").text,
        live.log(),
    ]
    for text in seen:
        assert VALUE not in text
    if DB_KIND == "sqlite":  # stored encrypted: the value is nowhere in the database's files
        db = Path(make_url(live.db_url).database or "")
        for path in (db, db.with_name(db.name + "-wal")):
            if path.exists():
                assert VALUE.encode() not in path.read_bytes()


def test_a_missing_secret_fails_the_job_naming_it(live: LiveServer) -> None:
    assert post(live, hello("nosec", extra=SECRET_ENV)).status_code == 201
    job = live.wait_job(live.http.post("/api/v1/apps/nosec/up", json={"replicas": 1}).json()["job"]["id"])
    assert job["status"] == "failed"
    assert "secret not found: db-pw (env DB_PASSWORD)" in job["error"]
    assert live.containers("nosec") == []


def test_viewers_see_env_values_redacted_and_no_secrets(live: LiveServer) -> None:
    assert post(live, hello("red", extra=SECRET_ENV)).status_code == 201
    viewer = live.cli("token", "create", "red-viewer", "--role", "viewer").stdout.strip()
    operator = live.cli("token", "create", "red-operator", "--role", "operator").stdout.strip()
    spec = live.http.get("/api/v1/apps/red/spec", headers=_auth(viewer)).json()["spec"]
    env = {e["name"]: e for e in spec["spec"]["environment"]}
    assert env["PLAIN"]["value"] == "<redacted>" and env["DB_PASSWORD"]["valueFrom"] == {"secret": "db-pw"}
    raw = live.http.get("/api/v1/apps/red/spec", params={"raw": "true"}, headers=_auth(viewer)).text
    assert "visible-123" not in raw and "<redacted>" in raw and "db-pw" in raw
    as_operator = live.http.get("/api/v1/apps/red/spec", params={"raw": "true"}, headers=_auth(operator)).text
    assert "visible-123" in as_operator
    assert_error(live.http.get("/api/v1/secrets", headers=_auth(viewer)), 403)
    assert_error(live.http.put("/api/v1/secrets/x", json={"value": "v"}, headers=_auth(viewer)), 403)
    assert live.http.get("/api/v1/secrets", headers=_auth(operator)).status_code == 200


def test_the_key_file_is_generated_private_on_sqlite_and_required_on_postgresql(tmp_path: Path) -> None:
    from orchestry.config import load_settings
    from orchestry.config.secretbox import SecretKeyError, load_box

    data = tmp_path / "data"
    sqlite = load_settings({"data_dir": str(data)})
    box = load_box(sqlite)
    key = data / "secret.key"
    assert (key.stat().st_mode & 0o777) == 0o600
    sealed = box.seal(VALUE)
    assert VALUE not in sealed and load_box(sqlite).open(sealed) == VALUE  # the same key next time

    pg = load_settings({"data_dir": str(tmp_path / "pg"), "database_url": "postgresql://x@127.0.0.1/db"})
    try:
        load_box(pg)
    except SecretKeyError as exc:
        assert "same key" in str(exc) and "secret_key" in str(exc)
    else:
        raise AssertionError("a PostgreSQL installation without secret_key must not invent a per-node key")
    other = load_settings({"data_dir": str(data), "secret_key": "Lt2qPUN-tcR_DB7y1riFnU8wvPecRtPoTl-H9-GdM3c="})
    try:
        load_box(other).open(sealed)
    except SecretKeyError as exc:
        assert "not the key" in str(exc)
    else:
        raise AssertionError("a wrong key must be named, not return garbage")
