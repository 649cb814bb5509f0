"""Webhooks end to end below a started server: the API (Flask's test client on a fresh database, SQLite or
PostgreSQL), the hook that enqueues deliveries with the events they carry, the `webhook-deliver` job run by the
real runner as the leader, and a real HTTP receiver on 127.0.0.1 that records each request and answers from a
script (500, then 200...)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeRuntime
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from orchestry.config import Settings, load_settings
from orchestry.jobs.base import Fence
from orchestry.jobs.runner import run_job
from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.cluster import Held, acquire_or_renew
from orchestry.models.db import make_engine
from orchestry.models.events import Event, record
from orchestry.models.tokens import create_token
from orchestry.models.webhooks import Webhook, WebhookDelivery
from orchestry.operations import webhooks as ops_webhooks
from orchestry.operations.request import request_task
from orchestry.web.app import create_app
from orchestry.workflows.webhooks import verify

from conftest import TEST_SECRET_KEY, Databases, hello, missing_image, post, start_server, stop_server, wait_for


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every request; answers the next status of `script`, then 200."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    script: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def at(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                recv = state["r"]
                recv.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = recv.script.pop(0) if recv.script else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no" if status >= 300 else b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def settings(db_url: str, tmp_path: Any) -> Settings:
    return load_settings(
        {"database_url": db_url, "data_dir": str(tmp_path), "cluster_name": "prod", "secret_key": TEST_SECRET_KEY}
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[FlaskClient]:
    engine = make_engine(settings.database_url)
    yield create_app(settings, engine=engine).test_client()
    engine.dispose()


@dataclass
class Leader:
    sessions: sessionmaker[Session]
    settings: Settings
    fence: Fence

    def run(self, *, later: float = 0.0) -> list[str]:
        """Claim and run every job due (`later` seconds from now: a retry's backoff passed), as the leader."""
        at = utcnow() + timedelta(seconds=later) if later else None
        statuses: list[str] = []
        while True:
            with self.sessions.begin() as s:
                job = jobq.claim_next(s, node="a", term=self.fence.term, now=at)
            if job is None:
                return statuses
            statuses.append(
                run_job(job, sessions=self.sessions, runtime=FakeRuntime(), settings=self.settings, fence=self.fence)
            )


@pytest.fixture
def leader(sessions: sessionmaker[Session], settings: Settings) -> Leader:
    with sessions.begin() as s:
        held = acquire_or_renew(s, "a", 120)
    assert isinstance(held, Held)
    return Leader(sessions, settings, Fence("a", held.term, lambda: time.monotonic() + 120))


def add(api: FlaskClient, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    resp = api.post("/api/v1/webhooks", json={"url": url, "events": events, **extra})
    assert resp.status_code == 201, resp.get_json()
    assert resp.headers["Location"] == f"/api/v1/webhooks/{resp.get_json()['name']}"
    data: dict[str, Any] = resp.get_json()
    return data


def emit(sessions: sessionmaker[Session], type_: str, message: str = "m", **details: Any) -> int:
    with sessions.begin() as s:
        ev = record(s, type_, message, actor="test", app_name="ghost", **details)
        s.flush()
        return ev.id


def history(api: FlaskClient, name: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/webhooks/{name}/deliveries")
    assert resp.status_code == 200, resp.get_json()
    rows: list[dict[str, Any]] = resp.get_json()["deliveries"]
    return rows


def test_one_signed_delivery_per_event_to_each_matching_webhook(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    jobs = add(api, receiver.url + "/jobs?token=t0ps3cret", ["job.failed"], name="jobs")
    certs = add(api, receiver.url + "/certs", ["cert"], name="certs")
    add(api, receiver.url + "/leader", ["leader"], name="leader")
    leader.run()  # the webhook.added events: subscribed by none of them
    assert receiver.seen == []

    failed = emit(sessions, "job.failed", "deploy job 3 failed: image missing", kind="deploy", job_id=3)
    cert = emit(sessions, "cert.failed", "certificate for a.test failed", cert="a.test")
    emit(sessions, "secret.set", "secret db created")  # nobody's
    assert leader.run() == ["succeeded", "succeeded"]
    assert [s.path for s in receiver.seen] == ["/jobs?token=t0ps3cret", "/certs"]

    got = receiver.at("/jobs?token=t0ps3cret")[0]
    assert verify(jobs["secret"], got.headers["orchestry-signature"], got.body, time.time())
    assert not verify(certs["secret"], got.headers["orchestry-signature"], got.body, time.time())
    body = json.loads(got.body)
    assert body["type"] == "job.failed" and body["webhook"] == "jobs" and body["cluster"] == "prod"
    assert body["event"]["id"] == failed and body["event"]["details"] == {"kind": "deploy", "job_id": 3}
    assert body["event"]["app"] == "ghost" and body["event"]["message"] == "deploy job 3 failed: image missing"
    assert got.headers["orchestry-event"] == "job.failed" and got.headers["content-type"] == "application/json"
    [row] = history(api, "jobs")
    assert row["key"] == got.headers["orchestry-delivery"] == body["delivery"]
    assert (row["status"], row["attempts"], row["response_code"], row["event_id"]) == ("delivered", 1, 200, failed)
    assert row["duration_ms"] is not None and row["finished_at"] is not None and row["job"].startswith("/api/v1/")
    assert history(api, "certs")[0]["event_id"] == cert and history(api, "leader") == []

    # A delivery job run again (a failover re-ran it) sends nothing once the delivery is settled.
    with sessions.begin() as s:
        request_task(s, "webhook-deliver", lock="again", args={"delivery": row["id"]}, actor="t")
    assert leader.run() == ["succeeded"]
    assert len(receiver.seen) == 2


def test_a_500_is_retried_after_a_backoff_with_the_same_delivery_key(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    hook = add(api, receiver.url + "/h", ["job.failed"], name="ops")
    receiver.script = [500]
    emit(sessions, "job.failed", "x", kind="deploy")
    assert leader.run() == ["queued"]  # answered 500: retried later, not now
    [row] = history(api, "ops")
    assert (row["status"], row["attempts"], row["response_code"]) == ("pending", 1, 500)
    assert row["error"] == "answered HTTP 500: no"
    with sessions() as s:
        job = s.get(jobq.Job, int(row["job"].rsplit("/", 1)[1]))
        assert job is not None and job.status == "queued"
        assert timedelta(seconds=0.5) < job.run_after - utcnow() <= timedelta(seconds=1)  # the schedule's 1 s
    assert leader.run() == []  # not due yet
    assert leader.run(later=2) == ["succeeded"]
    first, second = receiver.seen
    assert first.headers["orchestry-delivery"] == second.headers["orchestry-delivery"] == row["key"]
    assert first.body == second.body
    for seen in (first, second):
        assert verify(hook["secret"], seen.headers["orchestry-signature"], seen.body, time.time())
    [row] = history(api, "ops")
    assert (row["status"], row["attempts"], row["response_code"], row["error"]) == ("delivered", 2, 200, None)
    listed = api.get("/api/v1/webhooks/ops").get_json()["counts"]
    assert listed == {"delivered": 1, "failed": 0, "retried": 1, "dropped": 0}
    metrics = api.get("/metrics").get_data(as_text=True)
    assert 'orchestry_webhook_deliveries_total{outcome="retried",webhook="ops"} 1.0' in metrics
    assert 'orchestry_webhook_deliveries_total{outcome="delivered",webhook="ops"} 1.0' in metrics


def test_a_refusal_gives_up_at_once_and_its_failure_is_not_delivered(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    add(api, receiver.url + "/all", ["*"], name="all")
    leader.run()  # its own webhook.added
    receiver.seen.clear()
    receiver.script = [404]
    emit(sessions, "job.failed", "x", kind="deploy")
    assert leader.run() == ["failed"]
    [row, _added] = history(api, "all")
    assert (row["status"], row["attempts"], row["error"]) == ("failed", 1, "answered HTTP 404: no")
    with sessions() as s:
        failures = s.scalars(select(Event).where(Event.type == "job.failed").order_by(Event.id)).all()
    assert failures[-1].details["kind"] == "webhook-deliver"  # in the audit trail...
    assert leader.run() == [] and len(receiver.seen) == 1  # ...but not sent to the webhook: no loop


def test_a_receiver_down_is_retried(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    from pg_server import free_port

    add(api, f"http://127.0.0.1:{free_port()}/nobody", ["job.failed"], name="down")
    emit(sessions, "job.failed", "x", kind="deploy")
    assert leader.run() == ["queued"]
    [row] = history(api, "down")
    assert (row["status"], row["attempts"], row["response_code"]) == ("pending", 1, None)
    assert row["error"].startswith("ConnectError")


def test_the_test_endpoint_sends_to_that_webhook_only(
    api: FlaskClient, leader: Leader, receiver: Receiver, sessions: sessionmaker[Session]
) -> None:
    add(api, receiver.url + "/json", ["job.failed"], name="json")
    add(api, receiver.url + "/slack", ["job.failed"], name="chat", format="slack")
    resp = api.post("/api/v1/webhooks/chat/test")
    assert resp.status_code == 202, resp.get_json()
    data = resp.get_json()
    assert resp.headers["Location"] == data["url"] == data["job"]["url"]
    assert data["delivery"]["event_type"] == "webhook.test" and data["delivery"]["status"] == "pending"
    assert data["job"]["kind"] == "webhook-deliver"
    assert leader.run() == ["succeeded"]
    [seen] = receiver.seen
    assert seen.path == "/slack"
    text = json.loads(seen.body)["text"]
    assert text.startswith("[orchestry prod] webhook.test: test delivery to webhook chat")
    [row] = history(api, "chat")
    assert (row["id"], row["status"], row["event_id"]) == (data["delivery"]["id"], "delivered", None)
    assert api.post("/api/v1/webhooks/nope/test").status_code == 404


def test_a_rolled_back_event_sends_nothing(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    add(api, receiver.url + "/h", ["job.failed"], name="h")
    with sessions() as s:
        record(s, "job.failed", "never happened", actor="t", kind="deploy")
        s.flush()
        s.rollback()
        record(s, "job.failed", "this one did", actor="t", kind="deploy")  # same session, next transaction
        s.commit()
    assert leader.run() == ["succeeded"]
    assert [json.loads(s.body)["event"]["message"] for s in receiver.seen] == ["this one did"]


def test_a_backlog_is_bounded_and_deleting_a_webhook_cancels_its_deliveries(
    api: FlaskClient,
    sessions: sessionmaker[Session],
    leader: Leader,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ops_webhooks, "MAX_PENDING", 2)
    add(api, receiver.url + "/h", ["scaling"], name="busy")
    for n in range(3):
        emit(sessions, "scaling.out", f"{n} → {n + 1}")
    rows = history(api, "busy")
    assert [r["status"] for r in rows] == ["dropped", "pending", "pending"]
    assert rows[0]["job"] is None
    assert api.get("/api/v1/webhooks/busy").get_json()["counts"]["dropped"] == 1
    assert api.delete("/api/v1/webhooks/busy").status_code == 204
    assert leader.run() == ["succeeded", "succeeded"]  # their jobs find nothing to send
    assert receiver.seen == []
    with sessions() as s:
        assert s.scalars(select(WebhookDelivery)).all() == []
    assert api.get("/api/v1/webhooks/busy").status_code == 404


def test_a_disabled_webhook_gets_no_deliveries_until_enabled(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    add(api, receiver.url + "/ops", ["job.failed"], name="ops")
    add(api, receiver.url + "/other", ["job.failed"], name="other")
    receiver.script = [500]  # the first attempt fails: a retry waits
    emit(sessions, "job.failed", "before", kind="deploy")
    assert sorted(leader.run()) == ["queued", "succeeded"]
    assert [s.path for s in receiver.seen] == ["/ops", "/other"]

    off = api.post("/api/v1/webhooks/ops/disable")
    assert off.status_code == 200, off.get_json()
    assert (off.get_json()["enabled"], off.get_json()["changed"], off.get_json()["dropped"]) == (False, True, 1)
    again = api.post("/api/v1/webhooks/ops/disable").get_json()
    assert (again["changed"], again["dropped"]) == (False, 0)
    listed = {w["name"]: w["enabled"] for w in api.get("/api/v1/webhooks").get_json()["webhooks"]}
    assert listed == {"ops": False, "other": True}
    [retry] = history(api, "ops")
    assert (retry["status"], retry["error"]) == ("dropped", "webhook disabled")  # the retry is not sent

    emit(sessions, "job.failed", "while disabled", kind="deploy")
    assert leader.run(later=2) == ["succeeded", "succeeded"]  # the dropped retry's job, and other's delivery
    assert [s.path for s in receiver.seen] == ["/ops", "/other", "/other"]
    assert len(history(api, "ops")) == 1  # no delivery for it while disabled
    assert api.post("/api/v1/webhooks/ops/test").status_code == 202  # a test is still sent, on request
    assert leader.run() == ["succeeded"] and receiver.seen[-1].path == "/ops"

    on = api.post("/api/v1/webhooks/ops/enable").get_json()
    assert (on["enabled"], on["changed"]) == (True, True)
    emit(sessions, "job.failed", "after", kind="deploy")
    assert leader.run() == ["succeeded", "succeeded"]
    assert [json.loads(s.body)["event"]["message"] for s in receiver.at("/ops")[-1:]] == ["after"]
    with sessions() as s:
        kinds = [e.type for e in s.scalars(select(Event).where(Event.type.like("webhook.%")).order_by(Event.id))]
    assert kinds == ["webhook.added", "webhook.added", "webhook.disabled", "webhook.enabled"]
    assert api.post("/api/v1/webhooks/nope/disable").status_code == 404


def test_a_delivery_enqueued_before_a_disable_is_dropped_by_its_job(
    api: FlaskClient, sessions: sessionmaker[Session], leader: Leader, receiver: Receiver
) -> None:
    """The race: an event's delivery committed as the webhook was disabled (its job reads the state)."""
    add(api, receiver.url + "/h", ["job.failed"], name="h")
    emit(sessions, "job.failed", "x", kind="deploy")
    with sessions.begin() as s:  # disabled behind the API's back: the pending delivery stays
        s.execute(text("UPDATE webhooks SET enabled = false WHERE name = 'h'"))
    assert leader.run() == ["succeeded"]
    assert receiver.seen == []
    [row] = history(api, "h")
    assert (row["status"], row["error"]) == ("dropped", "webhook disabled")
    assert api.get("/api/v1/webhooks/h").get_json()["counts"]["dropped"] == 1


def test_bad_input_is_refused_naming_the_field(api: FlaskClient) -> None:
    url = "http://127.0.0.1:9/h"
    cases: list[tuple[Any, int, str | None]] = [
        ({"url": "ftp://x.test/", "events": ["*"]}, 422, "url"),
        ({"url": "https://u:p@x.test/", "events": ["*"]}, 422, "url"),
        ({"url": "https://x.test/" + "a" * 2100, "events": ["*"]}, 422, "url"),
        ({"url": "not a url", "events": ["*"]}, 422, "url"),
        ({"url": 5, "events": ["*"]}, 422, "url"),
        ({"url": url, "events": ["job.failed", "jobs.failed"]}, 422, "events.1"),
        ({"url": url, "events": []}, 422, "events"),
        ({"url": url, "events": "job.failed"}, 422, "events"),
        ({"url": url, "events": ["*"] * 33}, 422, "events"),
        ({"url": url}, 422, "events"),
        ({"events": ["*"]}, 422, "url"),
        ({"url": url, "events": ["*"], "name": "Bad_Name"}, 422, "name"),
        ({"url": url, "events": ["*"], "format": "teams"}, 422, "format"),
        ({"url": url, "events": ["*"], "secret": "short"}, 422, "secret"),
        ({"url": url, "events": ["*"], "extra": 1}, 422, "extra"),
        (None, 422, "<body>"),
    ]
    for body, status, fld in cases:
        resp = api.post("/api/v1/webhooks", json=body) if body is not None else api.post("/api/v1/webhooks")
        err = resp.get_json()
        assert resp.status_code == status, (body, err)
        assert set(err) == {"error", "detail", "fields"}, err
        assert [f["field"] for f in err["fields"]] == [fld], (body, err)
    unknown = api.post("/api/v1/webhooks", json={"url": url, "events": ["jobs.failed"]}).get_json()
    assert "unknown event type 'jobs.failed'" in unknown["detail"]
    assert api.get("/api/v1/webhooks").get_json() == {"webhooks": []}  # nothing stored
    add(api, url, ["*"], name="one")
    dup = api.post("/api/v1/webhooks", json={"url": url, "events": ["*"], "name": "one"})
    assert dup.status_code == 409 and dup.get_json()["fields"][0]["field"] == "name"
    for method, path in (("get", "/nope"), ("delete", "/nope"), ("get", "/nope/deliveries"), ("get", "/BAD!")):
        assert getattr(api, method)(f"/api/v1/webhooks{path}").status_code == 404
    assert api.get("/api/v1/webhooks/one/deliveries?limit=0").status_code == 400


def test_at_most_max_webhooks(api: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestry.web.webhooks as web_webhooks

    monkeypatch.setattr(web_webhooks, "MAX_WEBHOOKS", 2)
    add(api, "http://a.test/", ["*"])
    add(api, "http://b.test/", ["*"])
    resp = api.post("/api/v1/webhooks", json={"url": "http://c.test/", "events": ["*"]})
    assert resp.status_code == 409 and "at most 2 webhooks" in resp.get_json()["detail"]


def test_a_viewer_can_neither_add_nor_read(api: FlaskClient, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        _, viewer = create_token(s, "watcher", "viewer")
        _, operator = create_token(s, "ops", "operator")
    body = {"url": "http://127.0.0.1:9/h", "events": ["*"]}
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    assert api.post("/api/v1/webhooks", json=body, headers=as_viewer).status_code == 403
    assert api.get("/api/v1/webhooks", headers=as_viewer).status_code == 403
    assert api.post("/api/v1/webhooks", json=body).status_code == 401
    created = api.post("/api/v1/webhooks", json=body, headers={"Authorization": f"Bearer {operator}"})
    assert created.status_code == 201 and created.get_json()["created_by"] == "token:ops"
    for path in ("/127-0-0-1", "/127-0-0-1/deliveries"):
        assert api.get(f"/api/v1/webhooks{path}", headers=as_viewer).status_code == 403
    assert api.post("/api/v1/webhooks/127-0-0-1/test", headers=as_viewer).status_code == 403
    assert api.delete("/api/v1/webhooks/127-0-0-1", headers=as_viewer).status_code == 403


def test_the_secret_and_the_urls_path_are_never_returned_nor_stored_in_the_clear(
    api: FlaskClient, sessions: sessionmaker[Session]
) -> None:
    url = "https://hooks.example.test/services/T0/B0/pathsecret"
    created = add(api, url, ["*"], secret="given-secret-0123456789")
    assert created["secret"] == "given-secret-0123456789" and created["url"] == "https://hooks.example.test/…"
    generated = add(api, "http://other.test/", ["*"])
    assert generated["secret"].startswith("whsec_") and len(generated["secret"]) > 40
    for path in ("", "/hooks-example-test", "/hooks-example-test/deliveries"):
        shown = api.get(f"/api/v1/webhooks{path}").get_data(as_text=True)
        assert "pathsecret" not in shown and "given-secret" not in shown and generated["secret"] not in shown
    with sessions() as s:
        stored = json.dumps([list(r) for r in s.execute(text("SELECT * FROM webhooks")).all()], default=str)
        events = json.dumps([e.message for e in s.scalars(select(Event))])
    assert "pathsecret" not in stored + events and "given-secret" not in stored and generated["secret"] not in stored
    with sessions() as s:
        assert s.scalars(select(Webhook.name).order_by(Webhook.name)).all() == ["hooks-example-test", "other-test"]


@pytest.mark.parametrize("module", ["orchestry.jobs.runner", "orchestry.web.app", "orchestry.controller.node"])
def test_every_process_that_records_events_installs_the_hook(module: str) -> None:
    """The hook is installed by importing `orchestry.operations`; each entry point does, through its imports."""
    code = (
        f"import sys\nimport {module}\n"
        "assert 'orchestry.operations.webhooks' in sys.modules, 'the hook is not installed'\n"
        "from sqlalchemy import event\nfrom sqlalchemy.orm import Session\n"
        "from orchestry.operations.webhooks import _before_commit\n"
        "assert event.contains(Session, 'before_commit', _before_commit)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_live_a_failing_job_reaches_a_webhook_added_with_the_cli(
    databases: Databases, tmp_path: Path, receiver: Receiver, docker_required: Any
) -> None:
    """A real `orchestry serve`: `webhook add` through the CLI, a real event (an app whose image does not
    exist fails its job), the signed delivery at the receiver; then `webhook test`, the lists, a bad URL."""
    live = start_server(databases.migrated(), tmp_path)
    try:
        added = live.cli("webhook", "add", receiver.url + "/hook", "--events", "job.failed", "--name", "ops")
        assert added.returncode == 0, added.stderr
        secret = added.stdout.split("keep it for the receiver): ", 1)[1].strip()
        post(live, hello("ghost", image=missing_image()))
        up = live.http.post("/api/v1/apps/ghost/up", json={"replicas": 1}).json()["job"]["id"]
        assert live.wait_job(up, timeout=60)["status"] == "failed"
        wait_for(lambda: len(receiver.seen) == 1, 30)
        [seen] = receiver.seen
        assert verify(secret, seen.headers["orchestry-signature"], seen.body, time.time())
        event = json.loads(seen.body)["event"]
        assert (event["type"], event["app"], event["details"]["kind"], event["details"]["job_id"]) == (
            "job.failed",
            "ghost",
            "deploy",
            up,
        )
        assert "not available locally" in event["message"]

        tested = live.cli("webhook", "test", "ops")
        assert tested.returncode == 0 and "delivered, HTTP 200" in tested.stdout, tested.stderr
        assert json.loads(receiver.seen[-1].body)["type"] == "webhook.test"
        listed = live.cli("webhooks")
        assert listed.returncode == 0 and "ops" in listed.stdout and f"{receiver.url}/" in listed.stdout
        history = live.cli("webhook", "deliveries", "ops")
        assert history.returncode == 0 and "webhook.test" in history.stdout and "job.failed" in history.stdout
        bad = live.cli("webhook", "add", "ftp://x.test/", "--events", "*")
        assert bad.returncode == 1 and "url" in bad.stderr and "Traceback" not in bad.stderr
        unknown = live.cli("webhook", "add", receiver.url, "--events", "jobs.failed")
        assert unknown.returncode == 1 and "unknown event type 'jobs.failed'" in unknown.stderr
        off = live.cli("webhook", "disable", "ops")
        assert off.returncode == 0 and off.stdout.strip() == "webhook ops disabled", off.stderr
        assert live.cli("webhook", "disable", "ops").stdout.strip() == "webhook ops already disabled"
        row = next(line for line in live.cli("webhooks").stdout.splitlines() if line.startswith("ops"))
        assert row.split()[1] == "disabled", row
        assert live.cli("webhook", "enable", "ops").stdout.strip() == "webhook ops enabled"
        assert live.cli("webhook", "enable", "nope").returncode == 1
        assert live.cli("webhook", "delete", "ops").returncode == 0
        assert live.cli("webhooks").stdout.strip() == "no webhooks"
        assert len(receiver.seen) == 2  # the job's failure and the test: nothing twice
    finally:
        stop_server(live)
