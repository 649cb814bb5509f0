"""Cost that grows with change, not with size (issue 10): listing apps takes the same number of SQL
statements for 1 app as for 50 (it once took a query per app: 2.7-4.7 s per request at 1,000 apps)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from orchestry.config import load_settings
from orchestry.web.app import create_app


def register(api: Flask, first: int, count: int) -> None:
    ports = "  ports: [{containerPort: 8080}]\n"
    docs = "---\n".join(
        f"apiVersion: v1\nkind: App\nmetadata: {{name: app{i}}}\nspec:\n  image: busybox\n" + ports
        for i in range(first, first + count)
    )
    resp = api.test_client().post("/api/v1/apps", data=docs, content_type="application/yaml")
    assert resp.status_code == 201, resp.get_data(as_text=True)


def statements(engine: Engine, api: Flask, url: str) -> tuple[int, Any]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "SET ")):  # queries, not settings
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        resp = api.test_client().get(url)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return len(seen), resp.get_json()


def test_listing_apps_costs_the_same_for_1_and_50_apps(engine: Engine, db_url: str) -> None:
    api = create_app(load_settings({"database_url": db_url}), engine)
    register(api, 0, 1)
    one, body = statements(engine, api, "/api/v1/apps")
    assert [a["name"] for a in body["apps"]] == ["app0"]
    register(api, 1, 49)
    fifty, body = statements(engine, api, "/api/v1/apps")
    assert len(body["apps"]) == 50 and body["apps"][0]["image"] == "busybox"
    assert fifty == one <= 3, (one, fifty)  # the token check, apps with their revisions, replica counts


def test_the_list_shows_the_mode_in_force(engine: Engine, db_url: str) -> None:
    """The list reads three fields of each spec in SQL: the API's policy still wins over the spec's."""
    api = create_app(load_settings({"database_url": db_url}), engine)
    register(api, 0, 3)
    client = api.test_client()
    manual = "apiVersion: v1\nkind: App\nmetadata: {name: app1}\nspec:\n  image: busybox:1\n  type: http\n"
    manual += "  ports: [{containerPort: 8080}]\nscaling: {mode: manual}\n"
    assert client.post("/api/v1/apps", data=manual, content_type="application/yaml").status_code == 200
    assert client.put("/api/v1/apps/app2/scaling", json={"mode": "manual"}).status_code == 200
    assert client.put("/api/v1/apps/app1/scaling", json={"maxReplicas": 3}).status_code == 200
    _, body = statements(engine, api, "/api/v1/apps")
    shown = {a["name"]: (a["mode"], a["image"], a["type"], a["revision"]) for a in body["apps"]}
    assert shown == {
        "app0": ("auto", "busybox", "http", 1),
        "app1": ("auto", "busybox:1", "http", 2),  # the API's policy (no mode: auto) over the spec's manual
        "app2": ("manual", "busybox", "http", 1),
    }
