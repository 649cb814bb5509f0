"""The API through a real `orchestry serve` process, on the database the run was started with."""

from __future__ import annotations

import concurrent.futures
import json

import pytest
from openapi_spec_validator import validate

from conftest import LiveServer, assert_error, hello, post, snapshot


def test_register_create_unchanged_revise(live: LiveServer) -> None:
    first = post(live, hello())
    assert first.status_code == 201, first.text
    (result,) = first.json()["results"]
    assert (result["app"], result["action"], result["revision"]) == ("hello", "created", 1)
    assert result["content_hash"].startswith("sha256:")

    again = post(live, hello().replace("# a comment", "# another comment"))
    assert again.status_code == 200
    assert again.json()["results"][0]["action"] == "unchanged"
    assert "unchanged" in again.json()["results"][0]["message"]

    changed = post(live, hello(image="orchestry-testapp:v2"))
    assert changed.status_code == 200
    assert changed.json()["results"][0]["action"] == "revised"
    assert changed.json()["results"][0]["revision"] == 2

    revs = live.http.get("/api/v1/apps/hello/revisions").json()["revisions"]
    assert [(r["number"], r["current"]) for r in revs] == [(1, False), (2, True)]
    assert revs[0]["content_hash"] != revs[1]["content_hash"]

    app = live.http.get("/api/v1/apps/hello").json()
    assert (app["revision"], app["image"], app["status"], app["desired_replicas"]) == (
        2,
        "orchestry-testapp:v2",
        "registered",
        0,
    )
    assert app["replicas"] == []

    spec = live.http.get("/api/v1/apps/hello/spec").json()
    assert spec["spec"]["spec"]["image"] == "orchestry-testapp:v2"
    assert spec["spec"]["scaling"]["maxReplicas"] == 5  # defaults filled in
    old = live.http.get("/api/v1/apps/hello/spec", params={"revision": 1, "raw": "true"})
    assert old.text == hello()
    assert old.headers["content-type"].startswith("application/yaml")

    types = [e["type"] for e in live.http.get("/api/v1/apps/hello/events").json()["events"]]
    assert types == ["app.revised", "app.created"]  # newest first


def test_json_spec_and_raw_document(live: LiveServer) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "App",
        "metadata": {"name": "jsonapp"},
        "spec": {"image": "busybox:1", "ports": [{"containerPort": 80}]},
    }
    body = json.dumps(doc, indent=3)
    assert post(live, body, "application/json").status_code == 201
    raw = live.http.get("/api/v1/apps/jsonapp/spec?raw=true")
    assert raw.text == body
    assert raw.headers["content-type"].startswith("application/json")


def test_unknown_fields_warn_and_strict_refuses(live: LiveServer) -> None:
    extra = "  sidecars: [x]\nfrobnicate: true\n"
    resp = post(live, hello(extra=extra))
    assert resp.status_code == 201
    paths = {w["field"] for w in resp.json()["results"][0]["warnings"]}
    assert {"spec.sidecars", "frobnicate"} <= paths
    revs = live.http.get("/api/v1/apps/hello/revisions").json()["revisions"]
    assert len(revs[0]["warnings"]) == 2

    before = snapshot(live)
    strict = post(live, hello("strictapp", extra=extra), strict="true")
    body = assert_error(strict, 422, "invalid_spec")
    assert {f["field"] for f in body["fields"]} >= {"spec.sidecars", "frobnicate"}
    assert snapshot(live) == before


def test_two_apps_never_overwrite_each_other(live: LiveServer) -> None:
    assert post(live, hello("alpha", image="alpha:1")).status_code == 201
    assert post(live, hello("beta", image="beta:1")).status_code == 201
    assert post(live, hello("alpha", image="alpha:2")).json()["results"][0]["action"] == "revised"
    apps = {a["name"]: a for a in live.http.get("/api/v1/apps").json()["apps"]}
    assert (apps["alpha"]["image"], apps["alpha"]["revision"]) == ("alpha:2", 2)
    assert (apps["beta"]["image"], apps["beta"]["revision"]) == ("beta:1", 1)


def test_multi_document_registration_is_all_or_nothing(live: LiveServer) -> None:
    both = hello("one") + "---\n" + hello("two")
    resp = post(live, both)
    assert resp.status_code == 201
    assert [r["app"] for r in resp.json()["results"]] == ["one", "two"]

    before = snapshot(live)
    broken = hello("three") + "---\n" + hello("four").replace("orchestry-testapp:latest", "'Bad Image'")
    body = assert_error(post(live, broken), 422, "invalid_spec")
    assert body["fields"][0]["field"] == "spec.image"
    assert body["fields"][0]["document"] == 1
    assert snapshot(live) == before


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Upper", "uppercase"),
        ("semi;colon", ";"),
        ("brace{x}", "{}"),
        ("new\\nline", "newline"),
        ("a" * 64, "64 chars"),
        ("-dash", "leading dash"),
        ("", "empty"),
    ],
)
def test_bad_names_are_refused_naming_the_field(live: LiveServer, name: str, why: str) -> None:
    post(live, hello("keep"))
    before = snapshot(live)
    body = hello("placeholder").replace("name: placeholder", f'name: "{name}"')
    err = assert_error(post(live, body), 422, "invalid_spec")
    assert "metadata.name" in [f["field"] for f in err["fields"]], why
    assert snapshot(live) == before


@pytest.mark.parametrize(
    ("body", "ctype", "status", "error"),
    [
        ("apiVersion: v1\nkind: [unclosed\n", "application/yaml", 400, "malformed_spec"),
        ('{"apiVersion": "v1", "kind": ', "application/json", 400, "malformed_spec"),
        ("a: 1\na: 2\n", "application/yaml", 400, "malformed_spec"),
        ("", "application/yaml", 400, "malformed_spec"),
        ("\xff\xfe", "application/yaml", 400, "malformed_spec"),
        ("<html/>", "text/html", 415, "unsupported_media_type"),
        ("x=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("- just\n- a list\n", "application/yaml", 422, "invalid_spec"),
        ("42\n", "application/yaml", 422, "invalid_spec"),
    ],
)
def test_malformed_bodies(live: LiveServer, body: str, ctype: str, status: int, error: str) -> None:
    post(live, hello("keep"))
    before = snapshot(live)
    data = body.encode("latin-1") if body.startswith("\xff") else body.encode()
    assert_error(post(live, data, ctype), status, error)
    assert snapshot(live) == before


def test_wrong_types_name_every_field(live: LiveServer) -> None:
    body = hello(extra="scaling:\n  minReplicas: '2'\n").replace("containerPort: 8080", "containerPort: true")
    err = assert_error(post(live, body), 422, "invalid_spec")
    fields = {f["field"] for f in err["fields"]}
    assert {"spec.ports[0].containerPort", "scaling.minReplicas"} <= fields


def test_a_body_over_one_mebibyte_is_413(live: LiveServer) -> None:
    post(live, hello("keep"))
    before = snapshot(live)
    big = hello("big") + "# " + "x" * (2 * 1024 * 1024) + "\n"
    assert_error(post(live, big), 413, "payload_too_large")
    assert snapshot(live) == before


def test_replicas_above_the_configured_cap(live: LiveServer) -> None:
    body = hello(extra="scaling:\n  maxReplicas: 51\n")
    err = assert_error(post(live, body), 422)
    assert err["fields"][0]["field"] == "scaling.maxReplicas"
    assert "50" in err["fields"][0]["rule"]


def test_not_found_and_method_errors_are_json(live: LiveServer) -> None:
    for path in ("/api/v1/apps/nope", "/api/v1/apps/nope/spec", "/api/v1/apps/nope/revisions"):
        assert_error(live.http.get(path), 404, "not_found")
    assert_error(live.http.delete("/api/v1/apps/nope"), 404, "not_found")
    assert_error(live.http.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(live.http.get("/"), 404)
    resp = live.http.put("/api/v1/apps")
    assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"type": "a;b"}, "type"),
        ({"bogus": "1"}, "bogus"),
    ],
)
def test_bad_query_parameters(live: LiveServer, params: dict[str, str], field: str) -> None:
    err = assert_error(live.http.get("/api/v1/events", params=params), 400, "invalid_parameter")
    assert err["fields"][0]["field"] == field


def test_strict_flag_must_be_boolean(live: LiveServer) -> None:
    err = assert_error(post(live, hello(), strict="maybe"), 400)
    assert err["fields"][0]["field"] == "strict"
    assert live.http.get("/api/v1/apps").json()["apps"] == []


def test_events_filters(live: LiveServer) -> None:
    post(live, hello("a1"))
    post(live, hello("a2"))
    post(live, hello("a1", image="x:2"))
    events = live.http.get("/api/v1/events").json()["events"]
    assert [e["type"] for e in events] == ["app.revised", "app.created", "app.created"]
    assert [e["app"] for e in events] == ["a1", "a2", "a1"]
    assert len(live.http.get("/api/v1/events", params={"limit": 1}).json()["events"]) == 1
    assert len(live.http.get("/api/v1/events", params={"type": "app.created"}).json()["events"]) == 2
    assert len(live.http.get("/api/v1/events", params={"type": "app"}).json()["events"]) == 3
    assert live.http.get("/api/v1/events", params={"since": "2099-01-01T00:00:00Z"}).json()["events"] == []
    assert len(live.http.get("/api/v1/events", params={"since": "5m"}).json()["events"]) == 3
    assert len(live.http.get("/api/v1/apps/a2/events").json()["events"]) == 1


def test_delete_is_a_job_and_keeps_the_events(live: LiveServer) -> None:
    post(live, hello("gone"))
    post(live, hello("stays"))
    resp = live.http.delete("/api/v1/apps/gone")
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["url"] == f"/api/v1/jobs/{accepted['job']['id']}" == resp.headers["Location"]
    assert live.wait_job(accepted["job"]["id"])["status"] == "succeeded"
    assert_error(live.http.get("/api/v1/apps/gone"), 404)
    types = [e["type"] for e in live.http.get("/api/v1/apps/gone/events").json()["events"]]
    assert types == ["app.deleted", "app.delete", "app.created"]
    assert [a["name"] for a in live.http.get("/api/v1/apps").json()["apps"]] == ["stays"]
    # The name is free again: registering it starts a new history at revision 1.
    assert post(live, hello("gone")).json()["results"][0]["revision"] == 1


def test_concurrent_registrations_of_one_name_create_one_app(live: LiveServer) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(live, hello("race")).status_code, range(8)))
    assert sorted(codes).count(201) == 1
    assert set(codes) <= {200, 201}
    assert len(live.http.get("/api/v1/apps/race/revisions").json()["revisions"]) == 1


def test_health(live: LiveServer) -> None:
    body = live.http.get("/health").json()
    assert body["status"] == "ok" and body["database"] == "ok"


def test_openapi_document_is_valid_and_matches_the_routes(live: LiveServer) -> None:
    doc = live.http.get("/api/v1/openapi.json").json()
    validate(doc)
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    expected = {
        ("/health", "GET"),
        ("/api/v1/openapi.json", "GET"),
        ("/api/v1/apps", "GET"),
        ("/api/v1/apps", "POST"),
        ("/api/v1/apps/register", "POST"),
        ("/api/v1/apps/{name}", "GET"),
        ("/api/v1/apps/{name}", "DELETE"),
        ("/api/v1/apps/{name}/spec", "GET"),
        ("/api/v1/apps/{name}/revisions", "GET"),
        ("/api/v1/events", "GET"),
        ("/api/v1/apps/{name}/events", "GET"),
    }
    assert expected <= documented
    schemas = doc["components"]["schemas"]
    assert "AppSpec" in schemas and "ErrorOut" in schemas
    register = doc["paths"]["/api/v1/apps"]["post"]
    assert {"application/yaml", "application/json"} <= set(register["requestBody"]["content"])
    assert {"201", "200", "413", "415", "422"} <= set(register["responses"])


def test_every_route_is_documented() -> None:
    from orchestry.config import load_settings
    from orchestry.web.app import create_app

    app = create_app(load_settings({"database_url": "sqlite://"}))
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static" and not rule.rule.startswith("/ui/"):  # the dashboard's pages: not the API
            assert hasattr(app.view_functions[rule.endpoint], "__openapi__"), rule.rule
