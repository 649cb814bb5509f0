"""The dashboard under /ui/ through Flask's test client: access (login cookie, CSRF, roles, CSP), the pages
and fragments, and actions that enqueue the API's own jobs. The real browser runs in test_dashboard_browser."""

from __future__ import annotations

import gzip
import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from orchestry.config import load_settings
from orchestry.models.apps import get_app
from orchestry.models.base import utcnow
from orchestry.models.db import make_sessionmaker
from orchestry.models.jobs import Job
from orchestry.models.metrics import MetricSample
from orchestry.models.replicas import Replica
from orchestry.models.scaling import ScalingDecisionRow
from orchestry.models.tokens import create_token
from orchestry.web.app import create_app

SPEC = "apiVersion: v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  image: busybox\n"
SPEC += "  ports: [{{containerPort: 8080}}]\nscaling: {{mode: manual, maxReplicas: 6}}\n"


@pytest.fixture
def api(engine: Engine, db_url: str) -> Flask:
    return create_app(load_settings({"database_url": db_url}), engine)


def register(api: Flask, name: str, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = api.test_client().post(
        "/api/v1/apps", data=SPEC.format(name=name), content_type="application/yaml", headers=headers
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)


def new_token(engine: Engine, name: str, role: str) -> str:
    with make_sessionmaker(engine)() as db:
        _, secret = create_token(db, name, role)
        db.commit()
    return secret


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html[:2000]
    return found.group(1)


def login(client: FlaskClient, token: str) -> str:
    page = client.get("/ui/login").get_data(as_text=True)
    resp = client.post("/ui/login", data={"token": token, "csrf": csrf_of(page), "next": "/ui/"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/ui/", resp.get_data(as_text=True)
    return csrf_of(client.get("/ui/").get_data(as_text=True))


def jobs(engine: Engine) -> list[tuple[str, str | None, dict[str, Any], str]]:
    with make_sessionmaker(engine)() as db:
        return [(j.kind, j.app_name, j.args, j.created_by) for j in db.query(Job).order_by(Job.id)]


def desired(engine: Engine, name: str) -> tuple[str, int]:
    with make_sessionmaker(engine)() as db:
        app = get_app(db, name)
        assert app is not None
        return app.status, app.desired_replicas


class InlineScript(HTMLParser):
    """Whatever a CSP without 'unsafe-inline' would block: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        self.found += [f"{tag} {k}=" for k in names if k.startswith("on") or k == "style"]
        self.found += [
            f"{tag} {k}=javascript:" for k, v in attrs if (v or "").strip().lower().startswith("javascript:")
        ]


def test_open_mode_pages_headers_and_cookies(api: Flask) -> None:
    """No token exists: the dashboard is open on loopback as the API is, every page sends the CSP."""
    client = api.test_client()
    empty = client.get("/ui/")
    assert empty.status_code == 200
    assert "No app is registered yet" in empty.get_data(as_text=True)
    register(api, "web")
    assert client.post("/api/v1/apps/web/scale", json={"replicas": 1}).status_code == 202  # job 1
    pages = [
        "/ui/",
        "/ui/apps/rows",
        "/ui/apps/web",
        "/ui/apps/web/live",
        "/ui/jobs",
        "/ui/jobs?status=queued&app=web",
        "/ui/jobs/rows",
        "/ui/cluster",
        "/ui/cluster/live",
        "/ui/jobs/1",
        "/ui/jobs/1/live",
    ]
    for path in pages:
        resp = client.get(path)
        assert resp.status_code == 200, (path, resp.get_data(as_text=True)[:500])
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["Cache-Control"] == "no-store"
        parser = InlineScript()
        parser.feed(resp.get_data(as_text=True))
        assert parser.found == [], (path, parser.found)
    assert "web" in client.get("/ui/").get_data(as_text=True)
    cookie = next(c for c in empty.headers.getlist("Set-Cookie") if c.startswith("orchestry_ui_nonce="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    assert client.get("/ui/login").status_code == 303  # nothing to log in to
    for path in ("/ui/static/ui.js", "/ui/static/ui.css"):
        with client.get(path) as asset:
            assert asset.status_code == 200
    assert client.get("/ui/apps/nope").status_code == 404
    assert "does not exist" in client.get("/ui/apps/nope").get_data(as_text=True)
    assert client.get("/ui/jobs?status=nonsense").status_code == 400
    assert client.get("/ui/jobs/999").status_code == 404


def test_open_mode_refuses_a_foreign_host(api: Flask) -> None:
    resp = api.test_client().get("/ui/", headers={"Host": "rebound.example"})
    assert resp.status_code == 403 and "loopback" in resp.get_data(as_text=True)


def test_login_keeps_the_token_in_a_strict_httponly_cookie(api: Flask, engine: Engine) -> None:
    token = new_token(engine, "alice", "operator")
    client = api.test_client()
    first = client.get("/ui/apps/web?range=1h")
    assert first.status_code == 303 and first.headers["Location"] == "/ui/login?next=/ui/apps/web%3Frange%3D1h"
    assert client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"}).status_code == 401  # a fragment
    page = client.get("/ui/login").get_data(as_text=True)
    bad = client.post("/ui/login", data={"token": token + "x", "csrf": csrf_of(page)})
    assert bad.status_code == 401 and "not valid" in bad.get_data(as_text=True)
    resp = client.post("/ui/login", data={"token": token, "csrf": csrf_of(page), "next": "//evil.example/"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/ui/"
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("orchestry_ui_token="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
    home = client.get("/ui/")
    assert home.status_code == 200 and "alice" in home.get_data(as_text=True)
    # The cookie is the dashboard's only: the API still wants its header.
    assert client.get("/api/v1/apps").status_code == 401
    # Logging out needs the CSRF token too, and forgets the token.
    assert client.post("/ui/logout").status_code == 403
    out = client.post("/ui/logout", data={"csrf": csrf_of(home.get_data(as_text=True))})
    assert out.status_code == 303
    assert client.get("/ui/").headers["Location"] == "/ui/login?next=/ui/"
    # A revoked token ends the session at the next request.
    csrf = login(client, token)
    with make_sessionmaker(engine)() as db:
        db.execute(text("DELETE FROM api_tokens WHERE name = 'alice'"))
        create_token(db, "other", "operator")  # a token still exists: the dashboard does not open up
        db.commit()
    assert client.get("/ui/").status_code == 303
    assert client.post("/ui/apps/web/up", data={"csrf": csrf}).status_code == 401


def test_a_post_without_the_csrf_token_changes_nothing(api: Flask, engine: Engine) -> None:
    token = new_token(engine, "alice", "operator")
    register(api, "web", token)
    client = api.test_client()
    csrf = login(client, token)
    before = jobs(engine)
    for data, headers in [
        ({"replicas": "3"}, {}),  # none
        ({"replicas": "3", "csrf": "0" * 64}, {}),  # a wrong one
        ({"replicas": "3", "csrf": csrf}, {"Origin": "https://evil.example"}),  # the right one, another site
        ({"replicas": "3", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]:
        resp = client.post("/ui/apps/web/scale", data=data, headers=headers)
        assert resp.status_code == 403, resp.get_data(as_text=True)
    assert jobs(engine) == before and desired(engine, "web") == ("registered", 0)
    ok = client.post("/ui/apps/web/scale", data={"replicas": "3"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 303 and ok.headers["Location"].startswith("/ui/apps/web?job=")


def test_actions_enqueue_the_apis_jobs(api: Flask, engine: Engine) -> None:
    token = new_token(engine, "alice", "operator")
    register(api, "web", token)
    client = api.test_client()
    csrf = login(client, token)
    page = client.get("/ui/apps/web").get_data(as_text=True)
    assert 'id="scale-form"' in page and 'id="down-button"' in page and 'id="mode-button"' in page

    resp = client.post("/ui/apps/web/scale", data={"replicas": "2", "csrf": csrf})
    assert resp.status_code == 303
    assert desired(engine, "web") == ("running", 2)
    assert jobs(engine)[-1] == ("scale", "web", {"replicas": 2}, "token:alice")  # what the API enqueues
    job_id = int(resp.headers["Location"].split("job=")[1].split("#")[0])
    live = client.get(f"/ui/apps/web/live?job={job_id}").get_data(as_text=True)
    assert f'data-job="{job_id}"' in live and "Waiting for the leader" in live

    too_many = client.post("/ui/apps/web/scale", data={"replicas": "7", "csrf": csrf})
    assert too_many.status_code == 422 and "must be &lt;= 6" in too_many.get_data(as_text=True)
    assert client.post("/ui/apps/web/scale", data={"replicas": "two", "csrf": csrf}).status_code == 422

    # Destructive ones ask first: the first POST answers a confirmation page and changes nothing.
    asked = client.post("/ui/apps/web/down", data={"csrf": csrf})
    assert asked.status_code == 200 and "Are you sure?" in asked.get_data(as_text=True)
    assert desired(engine, "web") == ("running", 2)
    # Scaling to 0 is refused before it is asked while minReplicas is 1 (the autoscaler would undo it) ...
    refused = client.post("/ui/apps/web/scale", data={"replicas": "0", "csrf": csrf})
    assert refused.status_code == 422 and "minReplicas" in refused.get_data(as_text=True)
    assert "Are you sure?" not in refused.get_data(as_text=True) and desired(engine, "web") == ("running", 2)
    # ... and asked first where minReplicas is 0.
    zero = SPEC.format(name="zero").replace("maxReplicas: 6", "maxReplicas: 6, minReplicas: 0")
    headers = {"Authorization": f"Bearer {token}"}
    made = api.test_client().post("/api/v1/apps", data=zero, content_type="application/yaml", headers=headers)
    assert made.status_code == 201, made.get_data(as_text=True)
    asked = client.post("/ui/apps/zero/scale", data={"replicas": "0", "csrf": csrf})
    assert "Are you sure?" in asked.get_data(as_text=True) and desired(engine, "zero") == ("registered", 0)
    done = client.post("/ui/apps/web/down", data={"csrf": csrf, "confirm": "yes"})
    assert done.status_code == 303 and desired(engine, "web") == ("stopped", 0)
    assert jobs(engine)[-1][:2] == ("stop", "web")

    assert client.post("/ui/apps/web/up", data={"csrf": csrf, "replicas": "1"}).status_code == 303
    assert desired(engine, "web") == ("running", 1) and jobs(engine)[-1][:3] == ("deploy", "web", {"replicas": 1})

    # The mode changes the policy in force, and nothing else of it.
    policy = api.test_client().get("/api/v1/apps/web/scaling", headers={"Authorization": f"Bearer {token}"})
    before = policy.get_json()["policy"]
    assert client.post("/ui/apps/web/mode", data={"csrf": csrf, "mode": "auto"}).status_code == 303
    after = api.test_client().get("/api/v1/apps/web/scaling", headers={"Authorization": f"Bearer {token}"})
    assert after.get_json()["policy"] == {**before, "mode": "auto"} and after.get_json()["source"] == "api"
    assert client.post("/ui/apps/web/mode", data={"csrf": csrf, "mode": "sideways"}).status_code == 422


def test_a_viewer_sees_no_actions_and_cannot_post(api: Flask, engine: Engine) -> None:
    register(api, "web")
    token = new_token(engine, "val", "viewer")
    client = api.test_client()
    csrf = login(client, token)
    page = client.get("/ui/apps/web").get_data(as_text=True)
    assert "web" in page and "val · viewer" in page
    for marker in ('id="actions"', 'id="scale-form"', 'id="down-button"', 'id="mode-button"', "/scale"):
        assert marker not in page
    for action, data in [
        ("scale", {"replicas": "2"}),
        ("up", {}),
        ("down", {"confirm": "yes"}),
        ("mode", {"mode": "auto"}),
    ]:
        resp = client.post(f"/ui/apps/web/{action}", data={**data, "csrf": csrf})
        assert resp.status_code == 403 and "viewer" in resp.get_data(as_text=True)
    assert desired(engine, "web") == ("registered", 0)
    assert [j[0] for j in jobs(engine)] == []


def test_chart_data_is_thinned_and_carries_the_decisions(api: Flask, engine: Engine) -> None:
    register(api, "web")
    now = utcnow()
    with make_sessionmaker(engine)() as db:
        app = get_app(db, "web")
        assert app is not None
        db.add_all(
            MetricSample(app_id=app.id, taken_at=now - timedelta(seconds=2 * i), rps=float(i), ready_replicas=2)
            for i in range(1, 1500)  # 50 minutes at 2 s
        )
        db.add(
            ScalingDecisionRow(
                app_id=app.id,
                created_at=now - timedelta(minutes=5),
                current=1,
                target=3,
                recommended=3,
                direction="out",
                changed=True,
                reason="rps 120/replica > 80% of 50 → 3",
            )
        )
        db.commit()
    client = api.test_client()
    short = client.get("/ui/apps/web/series?range=15m").get_json()
    assert short["series"] == ["rps", "p95_ms", "cpu_percent", "memory_percent", "ready_replicas"]
    assert 170 <= len(short["points"]) <= 180  # 449 samples in 15 min, thinned
    assert all(short["from"] <= p[0] <= short["to"] for p in short["points"])
    assert short["decisions"][0]["reason"].startswith("rps 120/replica") and short["decisions"][0]["target"] == 3
    hour = client.get("/ui/apps/web/series?range=1h").get_json()
    assert len(hour["points"]) <= 180 and hour["points"][0][5] == 2.0
    assert client.get("/ui/apps/web/series?range=2d").status_code == 400
    assert client.get("/ui/apps/nope/series").status_code == 404


def test_revisions_diff_redacts_env_for_viewers(api: Flask, engine: Engine) -> None:
    register(api, "web")
    secret_env = "  environment: [{name: DB_PASSWORD, value: hunter2}]\n"
    revised = SPEC.format(name="web").replace("  ports:", secret_env + "  ports:")
    client = api.test_client()
    assert client.post("/api/v1/apps", data=revised, content_type="application/yaml").status_code == 200
    page = client.get("/ui/apps/web/diff").get_data(as_text=True)  # open mode: an operator
    assert "revision 1" in page and "revision 2" in page and "hunter2" in page and 'class="add"' in page
    assert "Compare the last two" in client.get("/ui/apps/web").get_data(as_text=True)
    assert client.get("/ui/apps/web/diff?a=1&b=9").status_code == 404
    assert client.get("/ui/apps/web/diff?a=x").status_code == 400
    viewer = api.test_client()
    login(viewer, new_token(engine, "val", "viewer"))
    shown = viewer.get("/ui/apps/web/diff?a=1&b=2").get_data(as_text=True)
    assert "DB_PASSWORD" in shown and "hunter2" not in shown and "redacted" in shown
    assert viewer.get("/ui/apps/web/logs").status_code == 200
    assert "no container engine" in viewer.get("/ui/apps/web/logs/tail").get_data(as_text=True)  # none here


def test_open_dashboards_share_one_render(api: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten dashboards polling the apps table within the same span cost one render (and its queries)."""
    from sqlalchemy import event

    from orchestry.web.ui import fragments

    monkeypatch.setattr(fragments, "SHARED_SECONDS", 60.0)  # this test is about sharing, not about a busy machine

    for i in range(5):
        register(api, f"app{i}")
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]) if a[2].startswith("SELECT") else None)
    client = api.test_client()
    first = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"})
    rendered = len(seen)
    for _ in range(9):
        again = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"})
        assert again.get_data() == first.get_data()
    per_poll = (len(seen) - rendered) / 9
    assert per_poll == 1 and rendered > 3, (per_poll, seen)  # only the access check: does any token exist
    assert b"app4" in first.get_data()
    monkeypatch.setattr(fragments, "SHARED_SECONDS", 0.0)  # once the span is over, the next poll renders again
    before = len(seen)
    client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"})
    assert len(seen) - before == rendered


def job_of(resp: Any) -> int:
    assert resp.status_code == 303, resp.get_data(as_text=True)[:500]
    return int(resp.headers["Location"].split("job=")[1].split("#")[0])


def test_restart_and_rollback_ask_first_then_enqueue_the_apis_jobs(api: Flask, engine: Engine) -> None:
    token = new_token(engine, "alice", "operator")
    register(api, "web", token)
    client = api.test_client()
    csrf = login(client, token)
    page = client.get("/ui/apps/web").get_data(as_text=True)
    # Not running, one revision: no restart, nothing to roll back to.
    assert 'id="restart-button"' not in page and 'id="rollback-form"' not in page
    refused = client.post("/ui/apps/web/restart", data={"csrf": csrf})
    assert refused.status_code == 409 and "is not running" in refused.get_data(as_text=True)
    refused = client.post("/ui/apps/web/rollback", data={"csrf": csrf})  # refused before asking
    assert refused.status_code == 409 and "no earlier revision" in refused.get_data(as_text=True)

    job_of(client.post("/ui/apps/web/scale", data={"replicas": "2", "csrf": csrf}))
    revised = SPEC.format(name="web").replace("maxReplicas: 6", "maxReplicas: 5")
    headers = {"Authorization": f"Bearer {token}"}
    resp = api.test_client().post("/api/v1/apps", data=revised, content_type="application/yaml", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    page = client.get("/ui/apps/web").get_data(as_text=True)
    assert 'id="restart-button"' in page and 'id="rollback-form"' in page
    assert '<option value="1">revision 1</option>' in page and '<option value="2">' not in page  # 2 is current

    # Restart: asked first (nothing enqueued), then the API's job (the same args, the actor).
    before = jobs(engine)
    asked = client.post("/ui/apps/web/restart", data={"csrf": csrf})
    text_ = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Are you sure?" in text_ and "Restart web?" in text_ and "2 replica(s)" in text_
    assert jobs(engine) == before
    job_id = job_of(client.post("/ui/apps/web/restart", data={"csrf": csrf, "confirm": "yes"}))
    assert jobs(engine)[-1] == ("restart", "web", {"restart": 1}, "token:alice")
    live = client.get(f"/ui/apps/web/live?job={job_id}").get_data(as_text=True)
    assert f'data-job="{job_id}"' in live and "restart" in live

    # Rollback: the default is the previous revision; the confirmation names it and carries it on.
    asked = client.post("/ui/apps/web/rollback", data={"csrf": csrf, "to": ""})
    text_ = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "Roll web back to revision 1?" in text_
    assert '<input type="hidden" name="to" value="1">' in text_ and "Yes, roll web back to revision 1" in text_
    assert jobs(engine)[-1][0] == "restart"
    with make_sessionmaker(engine)() as db:
        app = get_app(db, "web")
        assert app is not None and app.revision == 2
    job_of(client.post("/ui/apps/web/rollback", data={"csrf": csrf, "to": "1", "confirm": "yes"}))
    assert jobs(engine)[-1] == ("rollback", "web", {"revision": 3, "restored": 1}, "token:alice")
    with make_sessionmaker(engine)() as db:
        app = get_app(db, "web")
        assert app is not None and app.revision == 3

    # A revision that does not fit is refused with the API's words, before any question.
    for to, status, words in [("x", 422, "must be a revision number"), ("9", 422, "revision 9 does not exist")]:
        resp = client.post("/ui/apps/web/rollback", data={"csrf": csrf, "to": to, "confirm": "yes"})
        assert resp.status_code == status and words in resp.get_data(as_text=True), resp.get_data(as_text=True)
    # Both need the CSRF token, as every form does.
    assert client.post("/ui/apps/web/restart", data={"confirm": "yes"}).status_code == 403
    assert client.post("/ui/apps/web/rollback", data={"to": "1", "confirm": "yes"}).status_code == 403
    assert [j[0] for j in jobs(engine)][-2:] == ["restart", "rollback"]


def test_a_viewer_sees_no_restart_or_rollback(api: Flask, engine: Engine) -> None:
    register(api, "web")
    client = api.test_client()
    assert client.post("/api/v1/apps/web/scale", json={"replicas": 1}).status_code == 202
    revised = SPEC.format(name="web").replace("maxReplicas: 6", "maxReplicas: 5")
    assert client.post("/api/v1/apps", data=revised, content_type="application/yaml").status_code == 200
    assert 'id="restart-button"' in client.get("/ui/apps/web").get_data(as_text=True)  # open mode: an operator
    viewer = api.test_client()
    csrf = login(viewer, new_token(engine, "val", "viewer"))
    page = viewer.get("/ui/apps/web").get_data(as_text=True)
    for marker in ('id="restart-button"', 'id="rollback-form"', "/restart", "/rollback"):
        assert marker not in page
    before = jobs(engine)
    for action, data in [("restart", {"confirm": "yes"}), ("rollback", {"to": "1", "confirm": "yes"})]:
        resp = viewer.post(f"/ui/apps/web/{action}", data={**data, "csrf": csrf})
        assert resp.status_code == 403 and "viewer" in resp.get_data(as_text=True)
    assert jobs(engine) == before


def test_jobs_filter_by_kind_in_the_page_its_live_rows_and_the_api(api: Flask) -> None:
    client = api.test_client()
    register(api, "web")
    register(api, "api")
    assert client.post("/api/v1/apps/web/scale", json={"replicas": 1}).status_code == 202
    assert client.post("/api/v1/apps/api/up").status_code == 202
    assert client.post("/api/v1/apps/api/down").status_code == 202

    def kinds(html: str) -> list[str]:
        return re.findall(r"</a></td>\s*<td>([a-z-]+)</td>", html)

    page = client.get("/ui/jobs?kind=scale")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and kinds(html) == ["scale"]
    assert 'data-live="/ui/jobs/rows?kind=scale"' in html  # the live refresh keeps the filter
    assert '<option value="scale" selected>scale</option>' in html
    assert 'data-live="/ui/jobs/rows?app=api&amp;kind=stop"' in client.get("/ui/jobs?app=api&kind=stop").get_data(
        as_text=True
    )
    assert kinds(
        client.get("/ui/jobs/rows?kind=stop", headers={"X-Requested-With": "fetch"}).get_data(as_text=True)
    ) == ["stop"]
    assert sorted(kinds(client.get("/ui/jobs").get_data(as_text=True))) == ["deploy", "scale", "stop"]
    assert kinds(client.get("/ui/jobs?kind=restart").get_data(as_text=True)) == []

    # A bad filter: the page with the filters as given and what is wrong, no rows, no live refresh.
    bad = client.get("/ui/jobs?app=web&kind=bogus")
    html = bad.get_data(as_text=True)
    assert bad.status_code == 400 and 'id="filter-error"' in html and 'id="jobs-filter"' in html
    assert "kind: must be one of deploy, scale, stop" in html and "Traceback" not in html
    assert 'value="web"' in html and "data-live=" not in html
    both = client.get("/ui/jobs?kind=bogus&status=nope").get_data(as_text=True)
    assert "kind: must be one of" in both and "status: " in both
    rows = client.get("/ui/jobs/rows?kind=bogus", headers={"X-Requested-With": "fetch"})
    assert rows.status_code == 400 and "kind: must be one of" in rows.get_data(as_text=True)

    # The API filters by the same rule.
    assert [j["kind"] for j in client.get("/api/v1/jobs?kind=deploy").get_json()["jobs"]] == ["deploy"]
    err = client.get("/api/v1/jobs?kind=bogus")
    assert err.status_code == 400 and err.get_json()["fields"][0]["field"] == "kind"


def test_the_replicas_table_shows_each_replicas_host(engine: Engine, db_url: str) -> None:
    """The swarm runtime: the Swarm host each replica runs on (— while unplaced); docker: this node's engine."""
    from seed import running_app

    with make_sessionmaker(engine)() as db:
        running_app(db, "web", SPEC.format(name="web"), 3, 41000)
        db.flush()
        names = {"web-1": "worker-1", "web-2": "worker-2", "web-3": None}
        for replica in db.query(Replica):
            replica.host_name = names[replica.name]
        db.commit()
    swarm = create_app(load_settings({"database_url": db_url, "runtime": "swarm"}), engine).test_client()
    html = swarm.get("/ui/apps/web/live").get_data(as_text=True)
    cells = re.findall(r'<tr data-replica="(web-\d)">.*?<td class="host">(.*?)</td>', html, re.S)
    assert [(name, re.sub(r"<[^>]+>", "", cell)) for name, cell in cells] == [
        ("web-1", "worker-1"),
        ("web-2", "worker-2"),
        ("web-3", "—"),
    ], cells
    assert [r["host"] for r in swarm.get("/api/v1/apps/web").get_json()["replicas"]] == ["worker-1", "worker-2", None]
    docker = create_app(load_settings({"database_url": db_url}), engine).test_client()
    html = docker.get("/ui/apps/web/live").get_data(as_text=True)
    assert html.count('title="this node\'s Docker engine">local</span>') == 3 and "worker-1" not in html


def test_a_poll_holding_the_current_fragment_gets_a_bodiless_304(
    api: Flask, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each render carries an ETag; the script sends it back, and an unchanged fragment costs no body. The ETag
    is of the data shown: a render of the same data (relative times written as absolute ones) keeps it."""
    from orchestry.web.ui import fragments

    monkeypatch.setattr(fragments, "SHARED_SECONDS", 0.0)  # every poll renders: the ETag must hold across renders
    register(api, "web")
    client = api.test_client()
    assert client.post("/api/v1/apps/web/scale", json={"replicas": 1}).status_code == 202
    for path in ("/ui/apps/rows", "/ui/jobs/rows", "/ui/jobs/1/live", "/ui/apps/web/live"):
        first = client.get(path, headers={"X-Requested-With": "fetch"})
        etag = first.headers["ETag"]
        assert first.status_code == 200 and first.get_data() and etag.startswith('"'), path
        again = client.get(path, headers={"X-Requested-With": "fetch", "If-None-Match": etag})
        assert again.status_code == 304 and again.get_data() == b"" and again.headers["ETag"] == etag, path
        assert "Content-Security-Policy" in again.headers
        other = client.get(path, headers={"X-Requested-With": "fetch", "If-None-Match": '"stale"'})
        assert other.status_code == 200 and other.get_data() == first.get_data(), path
    # A poll that accepts gzip gets the render compressed once, under its own ETag.
    plain = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"})
    packed = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch", "Accept-Encoding": "gzip, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed.get_data()) == plain.get_data() and len(packed.get_data()) < len(plain.get_data())
    assert packed.headers["ETag"] == plain.headers["ETag"][:-1] + '-gz"'
    held = {"X-Requested-With": "fetch", "Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]}
    assert client.get("/ui/apps/rows", headers=held).status_code == 304
    before = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch"}).headers["ETag"]
    register(api, "api")  # the data changed: a new body, a new ETag
    changed = client.get("/ui/apps/rows", headers={"X-Requested-With": "fetch", "If-None-Match": before})
    assert changed.status_code == 200 and b"api" in changed.get_data() and changed.headers["ETag"] != before
    # a fragment's times are absolute (the page's script shows them relative)
    live = client.get("/ui/apps/web/live", headers={"X-Requested-With": "fetch"}).get_data(as_text=True)
    assert re.search(r"<time [^>]*data-rel>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>", live), live[:3000]
