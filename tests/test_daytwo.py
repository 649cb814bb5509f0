"""Day-two operations through a real server: rollback, restart, diff, register --dry-run, onFailure."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conftest import LiveServer, assert_error, hello, post, proxy_load, snapshot, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

FAST = """healthCheck:
  path: /health
  periodSeconds: 1
  timeoutSeconds: 1
  failureThreshold: 2
termination:
  drainSeconds: 2
  gracePeriodSeconds: 1
"""
ENV = "  environment: [{{name: COLOR, value: {color}}}]\n"


def spec(name: str, color: str, extra: str = "") -> str:
    return hello(name, extra=ENV.format(color=color) + FAST + extra)


def up(live: LiveServer, name: str, replicas: int) -> dict[str, Any]:
    job = live.wait_job(
        live.http.post(f"/api/v1/apps/{name}/up", json={"replicas": replicas}).json()["job"]["id"], timeout=180
    )
    assert job["status"] == "succeeded", job
    return job


def color_of(live: LiveServer, name: str) -> str:
    data = live.http.get(f"/api/v1/apps/{name}/spec").json()["spec"]
    return str(data["spec"]["environment"][0]["value"])


def running(live: LiveServer, name: str) -> dict[str, str]:
    """container id -> revision label of the app's running containers."""
    return {b.id: b.labels["org.orchestry.revision"] for b in live.containers(name) if b.status == "running"}


def test_rollback_of_a_registered_app_makes_a_revision_that_restores_the_previous(live: LiveServer) -> None:
    post(live, spec("rb", "blue"))
    post(live, spec("rb", "green"))
    resp = live.http.post("/api/v1/apps/rb/rollback")
    assert resp.status_code == 202, resp.text
    assert live.wait_job(resp.json()["job"]["id"])["status"] == "succeeded"
    revs = live.http.get("/api/v1/apps/rb/revisions").json()["revisions"]
    assert [(r["number"], r["restored_from"], r["current"]) for r in revs] == [
        (1, None, False),
        (2, None, False),
        (3, 1, True),
    ]
    assert revs[2]["content_hash"] == revs[0]["content_hash"] and color_of(live, "rb") == "blue"
    # the default after a rollback: the newest earlier revision with another spec (2), not 1 again
    again = live.http.post("/api/v1/apps/rb/rollback")
    assert live.wait_job(again.json()["job"]["id"])["status"] == "succeeded"
    assert color_of(live, "rb") == "green"
    types = [e["type"] for e in live.http.get("/api/v1/apps/rb/events").json()["events"]]
    assert types.count("app.rolled_back") == 2
    out = live.cli("revisions", "rb")
    assert out.returncode == 0 and "rollback to 1" in out.stdout and "rollback to 2" in out.stdout


def test_bad_rollback_and_restart_requests_change_nothing(live: LiveServer) -> None:
    post(live, spec("bad", "blue"))
    before = snapshot(live)
    body = assert_error(live.http.post("/api/v1/apps/bad/rollback", json={"to": 7}), 422, "invalid")
    assert body["fields"][0]["field"] == "to" and "revision 7 does not exist" in body["detail"]
    assert_error(live.http.post("/api/v1/apps/bad/rollback", json={"to": 1}), 422)  # the spec in force
    assert_error(live.http.post("/api/v1/apps/bad/rollback"), 409)  # nothing earlier
    assert_error(live.http.post("/api/v1/apps/bad/rollback", json={"to": False}), 422)
    assert_error(live.http.post("/api/v1/apps/bad/rollback", json={"to": 0}), 422)
    assert_error(live.http.post("/api/v1/apps/nope/rollback"), 404)
    restart = assert_error(live.http.post("/api/v1/apps/bad/restart"), 409, "conflict")
    assert "not running" in restart["detail"]
    assert snapshot(live) == before
    out = live.cli("rollback", "bad", "--to", "7")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "revision 7 does not exist" in out.stderr


def test_diff_and_dry_run_say_what_would_change_and_store_nothing(live: LiveServer) -> None:
    post(live, spec("df", "blue"))
    up(live, "df", 2)
    before = snapshot(live)
    dry = post(live, spec("df", "green", "rollout: {onFailure: rollback}\n"), dry_run="true")
    assert dry.status_code == 200, dry.text
    (result,) = dry.json()["results"]
    assert (result["action"], result["revision"], result["dry_run"], result["job"]) == ("revised", 2, True, None)
    assert {(c["path"], c["kind"]) for c in result["changes"]} == {
        ("spec.environment[0].value", "changed"),
        ("rollout", "added"),
    }
    assert result["replace"] == [f"{live.cluster}-df-1", f"{live.cluster}-df-2"]
    assert (
        snapshot(live) == before
        and live.http.get("/api/v1/jobs", params={"app": "df"}).json()["jobs"][0]["kind"] == "deploy"
    )  # no job either: the newest is still `up`'s
    same = post(live, spec("df", "blue"), dry_run="true").json()["results"][0]
    assert (same["action"], same["changes"], same["replace"]) == ("unchanged", [], [])
    new = post(live, spec("df2", "blue"), dry_run="true").json()["results"][0]
    assert new["action"] == "created" and live.http.get("/api/v1/apps/df2").status_code == 404
    cli = live.cli("register", "--dry-run", "-", stdin=spec("df", "red").encode())
    assert cli.returncode == 0, cli.stderr
    assert "dry run: app df would get revision 2" in cli.stdout
    assert '~ spec.environment[0].value: "blue" -> "red"' in cli.stdout and "replicas to replace" in cli.stdout

    post(live, spec("df", "green"))  # revision 2, rolled out
    diff = live.http.get("/api/v1/apps/df/diff").json()
    assert (diff["from_revision"], diff["to_revision"], diff["same_spec"]) == (1, 2, False)
    assert [(c["path"], c["before"], c["after"]) for c in diff["changes"]] == [
        ("spec.environment[0].value", "blue", "green")
    ]
    back = live.http.get("/api/v1/apps/df/diff", params={"from": 2, "to": 1}).json()
    assert back["changes"][0]["after"] == "blue"
    assert_error(live.http.get("/api/v1/apps/df/diff", params={"to": 9}), 404)
    assert_error(live.http.get("/api/v1/apps/df/diff", params={"to": 1}), 422)
    assert_error(live.http.get("/api/v1/apps/df/diff", params={"from": "x"}), 400)
    out = live.cli("diff", "df", "--from", "1", "--to", "2")
    assert out.returncode == 0 and '~ spec.environment[0].value: "blue" -> "green"' in out.stdout


def test_rollback_of_a_running_app_rolls_out_health_gated_without_failing_requests(live: LiveServer) -> None:
    post(live, spec("live", "blue"))
    up(live, "live", 2)
    first = set(running(live, "live"))
    job = live.wait_job(post(live, spec("live", "green")).json()["results"][0]["job"], timeout=300)
    assert job["status"] == "succeeded", job
    assert set(running(live, "live").values()) == {"2"}
    with proxy_load(live, "live", posts=True) as counts:
        asked = live.cli("rollback", "live")
        assert asked.returncode == 0, asked.stderr
        assert "rollback live: revision 3 restores revision 1" in asked.stdout
        job_id = int(asked.stdout.split(": job ")[1].split()[0])
        assert live.wait_job(job_id, timeout=300)["status"] == "succeeded"
    assert counts[1] == 0 and counts[0] > 0, counts
    out = live.cli("job", str(job_id), "--wait")  # --wait's progress lines, here of the finished job
    assert out.returncode == 0 and f"[ok ] start {live.cluster}-live-" in out.stdout, out.stdout
    now = running(live, "live")
    assert set(now.values()) == {"3"} and len(now) == 2 and not first & set(now)
    assert color_of(live, "live") == "blue"


def test_restart_replaces_each_replica_of_the_same_revision_one_at_a_time(live: LiveServer) -> None:
    post(live, spec("rs", "blue"))
    up(live, "rs", 2)
    before = running(live, "rs")
    with proxy_load(live, "rs", posts=True) as counts:
        out = live.cli("restart", "rs", "--json")
        assert out.returncode == 0, out.stderr
        job = live.wait_job(json.loads(out.stdout)["job"]["id"], timeout=300)
    assert job["status"] == "succeeded", job
    steps = [s["step"].split()[0] for s in job["steps"]]
    # one at a time: a new replica starts, then an old one drains and stops, twice
    assert [s for s in steps if s in ("start", "stop")] == ["start", "stop", "start", "stop"], steps
    assert counts[1] == 0 and counts[0] > 0, counts
    after = running(live, "rs")
    assert len(after) == 2 and not set(before) & set(after) and set(after.values()) == {"1"}
    app = live.http.get("/api/v1/apps/rs").json()
    assert app["revision"] == 1 and app["status"] == "running"


def test_a_failing_rollout_with_on_failure_rollback_restores_the_old_revision(live: LiveServer) -> None:
    auto = "rollout: {onFailure: rollback}\n"
    post(live, spec("auto", "blue", auto))
    up(live, "auto", 2)
    old = set(running(live, "auto"))
    broken = spec("auto", "green", auto).replace(
        "failureThreshold: 2", "failureThreshold: 2\n  expectedStatusCodes: [204]"
    )
    job = live.wait_job(post(live, broken).json()["results"][0]["job"], timeout=300)
    assert job["status"] == "succeeded", job
    rolled = job["result"]["rolled_back"]
    assert (rolled["from"], rolled["restored"], rolled["revision"]) == (2, 1, 3)
    steps = [s["step"] for s in job["steps"]]
    assert "rollout of revision 2 halted" in steps and "roll back to revision 1" in steps
    app = live.http.get("/api/v1/apps/auto").json()
    assert (app["status"], app["revision"]) == ("running", 3)
    assert set(running(live, "auto")) == old  # the old replicas kept serving, the failed new one is gone
    events = [e["type"] for e in live.http.get("/api/v1/apps/auto/events").json()["events"]]
    assert "app.rolled_back" in events
    assert events.index("rollout.rolled_back") < events.index("rollout.halted")  # newest first
    out = live.cli("job", str(job["id"]), "--wait")
    assert out.returncode == 1 and "rolled back to revision 1 as revision 3" in out.stderr


def test_a_killed_replica_is_marked_down_in_nginx_at_once(live: LiveServer) -> None:
    """Docker's die event: the controller's first act is nginx's down mark (before the row, the table push
    and the reconcile), so requests stop going to the dead replica within milliseconds."""
    post(live, spec("crash", "blue"))
    up(live, "crash", 2)
    victim = next(b for b in live.containers("crash") if b.status == "running")
    address = f"127.0.0.1:{victim.port}"
    control = f"http://127.0.0.1:{live.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/down"
    assert address not in httpx.get(control).json()
    victim.kill()
    took = wait_for(lambda: address in httpx.get(control).json(), timeout=5, step=0.01)
    assert took < 3, took  # measured here: about 0.1 s after the kill (on a loaded machine)
    assert 0 < httpx.get(control).json().get(address, 10) <= 10


HTTPD = """  command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/tmp"]
healthCheck: {protocol: TCP, periodSeconds: 1}
termination:
  drainSeconds: 0
  gracePeriodSeconds: 4
"""


def test_init_true_stops_an_image_whose_pid_1_ignores_sigterm_at_once(live: LiveServer) -> None:
    """busybox httpd as PID 1 ignores SIGTERM: every stop waited the whole grace period. `--wait` says so;
    `init: true` (Docker's --init) forwards SIGTERM and the replica stops at once."""
    post(live, hello("pid1", extra=HTTPD))
    up(live, "pid1", 1)
    out = live.cli("down", "pid1", "--wait")
    assert out.returncode == 0, out.stderr
    assert f"[...] stopping {live.cluster}-pid1-1 (SIGKILL in 4 s" in out.stdout, out.stdout
    took = next(s for s in live.http.get("/api/v1/jobs", params={"app": "pid1"}).json()["jobs"] if s["kind"] == "stop")
    waited = [s["at"] for s in took["steps"] if s["step"].startswith(("stopping", "stop "))]
    from datetime import datetime

    assert (datetime.fromisoformat(waited[1]) - datetime.fromisoformat(waited[0])).total_seconds() >= 3.5

    resp = post(live, hello("pid1", extra=HTTPD.replace('"/tmp"]', '"/tmp"]\n  init: true')))
    assert resp.json()["results"][0]["action"] == "revised"
    warnings = [w["message"] for w in resp.json()["results"][0]["warnings"]]  # a period alone: no refusal
    assert warnings == ["healthCheck.timeoutSeconds: not given: defaults to periodSeconds (1) instead of 5"]
    up(live, "pid1", 1)
    (box,) = [b for b in live.containers("pid1") if b.status == "running"]
    assert box.inspect()["HostConfig"]["Init"] is True
    job = live.wait_job(live.http.post("/api/v1/apps/pid1/down").json()["job"]["id"])
    steps = [s["at"] for s in job["steps"] if s["step"].startswith(("stopping", "stop "))]
    assert (datetime.fromisoformat(steps[1]) - datetime.fromisoformat(steps[0])).total_seconds() < 2.5, job["steps"]
