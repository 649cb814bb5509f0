"""The autoscaler end to end (real Docker, real nginx, real load), and the scaling API and CLI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveServer, assert_error, hello, post, proxy_load, snapshot, start_server, stop_server, wait_for

pytestmark = pytest.mark.usefixtures("testapp_image")

FAST_HEALTH = """healthCheck:
  path: /health
  periodSeconds: 1
  timeoutSeconds: 1
termination:
  drainSeconds: 2
  gracePeriodSeconds: 1
"""


def scaling(**fields: Any) -> str:
    policy = {
        "minReplicas": 1,
        "maxReplicas": 4,
        "targetRPSPerReplica": 10,
        "windowSeconds": 10,
        "cooldownSeconds": 5,
        "stabilizationWindowSeconds": 12,
        "maxScaleOutStep": 3,
        "maxScaleInStep": 3,
        **fields,
    }
    return "scaling:\n" + "".join(f"  {k}: {v}\n" for k, v in policy.items())


def up(live: LiveServer, name: str, replicas: int = 1) -> None:
    job = live.wait_job(live.http.post(f"/api/v1/apps/{name}/up", json={"replicas": replicas}).json()["job"]["id"])
    assert job["status"] == "succeeded", job


def desired(live: LiveServer, app: str) -> int:
    return int(live.http.get(f"/api/v1/apps/{app}").json()["desired_replicas"])


def history(live: LiveServer, app: str, **params: str) -> list[dict[str, Any]]:
    resp = live.http.get(f"/api/v1/apps/{app}/scaling/history", params=params)
    assert resp.status_code == 200, resp.text
    decisions: list[dict[str, Any]] = resp.json()["decisions"]
    return decisions


def test_load_scales_out_and_its_end_scales_back_in(live: LiveServer) -> None:
    """The must-show: load on the test app scales it out, the new replicas join rotation, the load stops,
    it scales back to min after the stabilization window, and the history explains both."""
    post(live, hello("surge", extra=FAST_HEALTH + scaling()))
    up(live, "surge", 1)
    control = f"http://127.0.0.1:{live.env['ORCHESTRY_NGINX_CONTROL_PORT']}/_orchestry/routes"
    with proxy_load(live, "surge", rps=40) as counts:  # 4x the per-replica target of a single replica
        started = time.monotonic()
        wait_for(lambda: desired(live, "surge") > 1, timeout=20, step=0.2)
        decided = time.monotonic() - started
        wait_for(lambda: len(httpx.get(control).json()["apps"].get("surge", [])) > 1, timeout=20, step=0.2)
        serving = time.monotonic() - started
    assert counts[0] > 50 and counts[1] == 0, counts
    out = history(live, "surge")
    assert out and out[0]["direction"] == "out", out
    assert "rps" in out[0]["reason"] and out[0]["metrics"]["window"]["rps"] is not None
    wait_for(lambda: desired(live, "surge") == 1, timeout=60, step=0.5)
    decisions = history(live, "surge")
    directions = "".join(d["direction"][0] for d in reversed(decisions))  # oldest first: "o", then "i"s
    # No flapping: scaled out, then in, never out again. Scale-in may take more than one step: each goes only
    # as low as the highest recommendation of the stabilization window, which a sliding average lowers gradually.
    assert re.fullmatch("o+i+", directions), decisions
    assert "every metric < 30% of its target" in decisions[0]["reason"], decisions[0]["reason"]
    events = [e["type"] for e in live.http.get("/api/v1/apps/surge/events").json()["events"]]
    assert "scaling.out" in events and "scaling.in" in events
    detail = live.http.get("/api/v1/apps/surge").json()
    assert detail["mode"] == "auto" and "→ 1: every metric < 30%" in detail["last_scaling"], detail["last_scaling"]
    shown = live.cli("status", "surge")
    assert shown.returncode == 0 and "last scaling" in shown.stdout, shown.stdout
    exposition = live.http.get("/metrics").text
    assert re.search(r'orchestry_scaling_actions\{app="surge",direction="out"\} [1-9]', exposition), exposition
    assert re.search(r'orchestry_scaling_actions\{app="surge",direction="in"\} [1-9]', exposition)
    print(f"decision after {decided:.1f}s, serving after {serving:.1f}s: {decisions[-1]['reason']}")


def test_manual_mode_is_never_autoscaled(live: LiveServer) -> None:
    post(live, hello("steady", extra=FAST_HEALTH + scaling(mode="manual")))
    up(live, "steady", 1)
    # Positive control: an auto app beside it under the same load does scale, so the autoscaler is running and
    # the load is enough; the manual app saw every one of those samples and evaluations.
    post(live, hello("eager", extra=FAST_HEALTH + scaling()))
    up(live, "eager", 1)
    with proxy_load(live, "steady", rps=40), proxy_load(live, "eager", rps=40):
        wait_for(lambda: desired(live, "eager") > 1, timeout=30, step=0.2)
        time.sleep(2)  # and one more metrics sample (every 2 s) and surge check past that decision
    assert history(live, "eager") != []
    assert desired(live, "steady") == 1
    assert history(live, "steady") == []


def test_the_policy_api(live: LiveServer, tmp_path: Path) -> None:
    post(live, hello("tuned", extra=scaling()))
    base = "/api/v1/apps/tuned/scaling"
    shown = live.http.get(base).json()
    assert shown["source"] == "spec" and shown["policy"]["maxReplicas"] == 4 and shown["policy"]["mode"] == "auto"

    before = snapshot(live)
    for body, status, error, where in [
        ({"minReplicas": 5, "maxReplicas": 3}, 422, "invalid_policy", "scaling.maxReplicas"),
        ({"maxReplicas": 500}, 422, "invalid_policy", "scaling.maxReplicas"),
        ({"scaleInThresholdPct": 90, "scaleOutThresholdPct": 80}, 422, "invalid_policy", "scaling.scaleInThresholdPct"),
        ({"mode": "sometimes"}, 422, "invalid_policy", "scaling.mode"),
        ({"targetRPSPerReplica": True}, 422, "invalid_policy", "scaling.targetRPSPerReplica"),
        ({"maxReplicaz": 3}, 422, "invalid_policy", "scaling.maxReplicaz"),
        ([1, 2], 422, "invalid", "<body>"),
    ]:
        resp = live.http.put(base, json=body)
        error_body = assert_error(resp, status, error)
        assert any(f["field"] == where for f in error_body.get("fields", [])), (body, error_body)
    assert_error(live.http.put(base, content=b"{nope", headers={"Content-Type": "application/json"}), 400)
    assert_error(live.http.put(base, content=b"maxReplicas: 3", headers={"Content-Type": "text/yaml"}), 415)
    assert_error(live.http.put("/api/v1/apps/nope/scaling", json={}), 404)
    assert snapshot(live) == before  # nothing stored by any of them
    assert live.http.get(base).json()["source"] == "spec"

    resp = live.http.put(base, json={"maxReplicas": 8, "targetRPSPerReplica": 25, "cooldownSeconds": 30})
    assert resp.status_code == 200, resp.text
    policy = resp.json()
    assert policy["source"] == "api" and policy["policy"]["maxReplicas"] == 8
    assert policy["policy"]["minReplicas"] == 1  # absent fields take the spec's defaults (PUT replaces)
    events = live.http.get("/api/v1/apps/tuned/events").json()["events"]
    assert events[0]["type"] == "scaling.policy" and "maxReplicas 4 → 8" in events[0]["message"]

    # The CLI shows it and changes one field, keeping the others.
    out = live.cli("scaling", "tuned", "--set", "maxReplicas=6")
    assert out.returncode == 0, out.stderr
    assert "1..6 replicas" in out.stdout and "policy from the api" in out.stdout
    assert live.http.get(base).json()["policy"]["targetRPSPerReplica"] == 25
    assert live.http.get("/api/v1/apps/tuned").json()["max_replicas"] == 6  # the app shows the policy in force
    scaled = live.http.post("/api/v1/apps/tuned/scale", json={"replicas": 1})
    assert scaled.status_code == 202 and "auto mode: the autoscaler may change it" in scaled.json()["message"]
    assert live.http.post("/api/v1/apps/tuned/scale", json={"replicas": 7}).status_code == 422  # above the policy's 6
    bad = live.cli("scaling", "tuned", "--set", "maxReplicas=0")
    assert bad.returncode == 1 and "scaling.maxReplicas" in bad.stderr and "Traceback" not in bad.stderr
    as_json = json.loads(live.cli("scaling", "tuned", "--json").stdout)
    assert as_json["policy"]["policy"]["maxReplicas"] == 6 and as_json["history"] == []

    # It survives a restart of the controller (a second server on the same database reads it back).
    other = start_server(live.db_url, tmp_path, extra_env={"ORCHESTRY_NGINX": "off"})
    try:
        assert other.http.get(base).json()["policy"]["maxReplicas"] == 6
    finally:
        stop_server(other, remove_containers=False)

    # A new revision whose scaling section differs brings the spec's policy back; one that does not, keeps it.
    post(live, hello("tuned", extra=scaling() + "termination:\n  drainSeconds: 3\n"))
    assert live.http.get(base).json()["source"] == "api"
    post(live, hello("tuned", extra=scaling(maxReplicas=3)))
    shown = live.http.get(base).json()
    assert shown["source"] == "spec" and shown["policy"]["maxReplicas"] == 3


def test_evaluate_explains_without_acting(live: LiveServer) -> None:
    post(live, hello("whatif", extra=scaling(maxReplicas=10, maxScaleOutStep=2, targetRPSPerReplica=50)))
    up(live, "whatif", 3)
    jobs_before = len(live.http.get("/api/v1/jobs").json()["jobs"])
    body = {"metrics": {"rps": 546}, "current": 3}  # 182 rps per replica against a target of 50
    resp = live.http.post("/api/v1/apps/whatif/scaling/evaluate", json=body)
    assert resp.status_code == 200, resp.text
    decision = resp.json()["decision"]
    assert (decision["current"], decision["target"], decision["direction"]) == (3, 5, "out")
    assert decision["recommended"] == 10 and decision["governing"] == "rps"
    assert "maxScaleOutStep 2 → 5" in decision["reason"], decision["reason"]
    assert decision["ratios"]["rps"] == pytest.approx(182 / 50, rel=0.01)
    assert resp.json()["acted"] is False and desired(live, "whatif") == 3
    assert len(live.http.get("/api/v1/jobs").json()["jobs"]) == jobs_before

    quiet = live.http.post("/api/v1/apps/whatif/scaling/evaluate", json={"metrics": {"rps": 3, "cpu_percent": 5}})
    assert quiet.json()["decision"]["direction"] == "in"
    tried = live.http.post(
        "/api/v1/apps/whatif/scaling/evaluate",
        json={"metrics": {"rps": 546}, "current": 3, "policy": {"mode": "manual"}},
    )
    assert tried.json()["decision"]["direction"] == "none" and "manual" in tried.json()["decision"]["reason"]
    for bad, where in [
        ({"metrics": {"rps": -1}}, "metrics.rps"),
        ({"metrics": {"rpz": 1}}, "metrics.rpz"),
        ({}, "metrics"),
        ({"metrics": {}, "policy": {"maxReplicas": 0}}, "scaling.maxReplicas"),
        ({"metrics": {}, "current": 11}, "current"),  # above the app's maxReplicas (10)
        ({"metrics": {}, "current": 4, "policy": {"maxReplicas": 3}}, "current"),  # the policy tried
        ({"metrics": {}, "current": 1000000}, "current"),  # once 16 s, 111 MB and the write lock held
        ({"metrics": {}, "ready": 1000000}, "ready"),
    ]:
        error = assert_error(live.http.post("/api/v1/apps/whatif/scaling/evaluate", json=bad), 422)
        assert any(f["field"] == where for f in error["fields"]), error


def test_a_policy_set_through_the_api_survives_a_restart_of_the_controller(db_url: str, tmp_path: Path) -> None:
    server = start_server(db_url, tmp_path, extra_env={"ORCHESTRY_NGINX": "off"})
    try:
        post(server, hello("kept", extra=scaling()))
        resp = server.http.put("/api/v1/apps/kept/scaling", json={"maxReplicas": 7, "targetRPSPerReplica": 30})
        assert resp.status_code == 200, resp.text
    finally:
        stop_server(server, remove_containers=False)
    env = {"ORCHESTRY_NGINX": "off", "ORCHESTRY_CLUSTER_NAME": server.cluster}
    again = start_server(db_url, tmp_path, extra_env=env)  # the same database, a new process
    try:
        shown = again.http.get("/api/v1/apps/kept/scaling").json()
        assert shown["source"] == "api"
        assert (shown["policy"]["maxReplicas"], shown["policy"]["targetRPSPerReplica"]) == (7, 30)
        assert again.http.get("/api/v1/apps/kept").json()["max_replicas"] == 7  # the policy in force
    finally:
        stop_server(again)


def test_up_starts_the_minimum_of_the_policy_in_force(live: LiveServer) -> None:
    """`up` without a count starts minReplicas of the policy the API set, as the bound checks use its max."""
    post(live, hello("floor", extra=scaling(mode="manual")))  # the spec says minReplicas 1
    resp = live.http.put("/api/v1/apps/floor/scaling", json={"mode": "manual", "minReplicas": 2, "maxReplicas": 4})
    assert resp.status_code == 200, resp.text
    job = live.wait_job(live.http.post("/api/v1/apps/floor/up").json()["job"]["id"])
    assert job["status"] == "succeeded", job
    assert live.http.get("/api/v1/apps/floor").json()["desired_replicas"] == 2
