"""Correctness of the API (issue 11): Idempotency-Key scope, duplicate keys, header values, labels."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestry.nginx.traffic import Counters, combine, traffic
from orchestry.web import idempotency as idem
from orchestry.workflows.metrics import LatencyHistogram, accumulate

from conftest import LiveServer, assert_error, hello, post, wait_for


def _post(live: LiveServer, path: str, body: Any = None, key: str | bytes | None = None) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    return live.http.post(f"/api/v1/apps/{path}", json=body, headers=headers)


MANUAL_FROM_ZERO = "scaling:\n  mode: manual\n  minReplicas: 0\n"  # `scale 0` is within its bounds


def test_an_idempotency_key_is_scoped_to_the_app_and_operation(live: LiveServer) -> None:
    for name in ("idem-a", "idem-b"):
        assert post(live, hello(name, extra=MANUAL_FROM_ZERO)).status_code == 201
    first = _post(live, "idem-a/down", key="k-1")
    assert first.status_code == 202 and first.json()["created"] is True
    other_app = _post(live, "idem-b/down", key="k-1")
    assert other_app.status_code == 202, other_app.text
    assert other_app.json()["created"] is True and other_app.json()["job"]["app"] == "idem-b"
    other_op = _post(live, "idem-a/scale", {"replicas": 0}, key="k-1")
    assert other_op.status_code == 202, other_op.text
    assert other_op.json()["job"]["kind"] == "scale"
    assert len({r.json()["job"]["id"] for r in (first, other_app, other_op)}) == 3


def test_the_same_key_with_another_request_is_refused(live: LiveServer) -> None:
    assert post(live, hello("idem-c", extra=MANUAL_FROM_ZERO)).status_code == 201
    first = _post(live, "idem-c/scale", {"replicas": 0}, key="k-2")
    assert first.status_code == 202
    err = assert_error(_post(live, "idem-c/scale", {"replicas": 1}, key="k-2"), 422)
    assert err["fields"][0]["field"] == "Idempotency-Key" and "different request" in err["fields"][0]["rule"]
    again = _post(live, "idem-c/scale", {"replicas": 0}, key="k-2")
    assert again.status_code == 202 and again.json()["created"] is False
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    assert again.headers["Location"] == first.headers["Location"]
    # Nothing was changed by the refused request.
    assert live.http.get("/api/v1/apps/idem-c").json()["desired_replicas"] == 0


@pytest.mark.parametrize("key", ["", "x" * 129, "caf\u00e9".encode("latin-1"), "tab\there"])
def test_malformed_idempotency_keys_are_400(live: LiveServer, key: str | bytes) -> None:
    assert post(live, hello("idem-d")).status_code == 201
    err = assert_error(_post(live, "idem-d/down", key=key), 400)
    assert err["fields"][0]["field"] == "Idempotency-Key"
    assert err["fields"][0]["rule"] == "must be 1-128 printable ASCII characters"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("a", None),
        ("x" * 128, None),
        ("order-42 retry #1 ~", None),
        ("", idem.RULE),
        ("x" * 129, idem.RULE),
        ("caf\u00e9", idem.RULE),
        ("new\nline", idem.RULE),
        ("\x7f", idem.RULE),
    ],
)
def test_key_problem(key: str, problem: str | None) -> None:
    assert idem.key_problem(key) == problem


def test_scope_and_fingerprint_are_functions_of_every_part() -> None:
    base = idem.scoped_key("POST", "/api/v1/apps/a/up", "alice", "k")
    assert base == idem.scoped_key("post", "/api/v1/apps/a/up", "alice", "k")
    for other in (
        idem.scoped_key("POST", "/api/v1/apps/b/up", "alice", "k"),
        idem.scoped_key("POST", "/api/v1/apps/a/down", "alice", "k"),
        idem.scoped_key("POST", "/api/v1/apps/a/up", "bob", "k"),
        idem.scoped_key("DELETE", "/api/v1/apps/a/up", "alice", "k"),
    ):
        assert other != base
    assert len(base) <= 128
    fp = idem.fingerprint("DELETE", "/a", [("force", "true"), ("x", "1")], b"")
    assert fp == idem.fingerprint("DELETE", "/a", [("x", "1"), ("force", "true")], b"")
    assert fp != idem.fingerprint("DELETE", "/a", [], b"")
    assert idem.fingerprint("POST", "/a", [], b'{"replicas":1}') != idem.fingerprint(
        "POST", "/a", [], b'{"replicas":2}'
    )


def promtool(text: str) -> None:
    """`promtool check metrics` lints the exposition (names, types, units); promtool must be installed."""
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_metrics_pass_promtool_and_count_jobs_with_counters(live: LiveServer) -> None:
    assert post(live, hello("prom")).status_code == 201
    job = _post(live, "prom/down").json()["job"]["id"]
    assert live.wait_job(job)["status"] == "succeeded"
    text = live.http.get("/metrics").text
    promtool(text)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["orchestry_job_seconds"].type == "counter"
    finished = {tuple(sorted(s.labels.items())): s.value for s in families["orchestry_jobs_finished"].samples}
    assert finished[(("kind", "stop"), ("status", "succeeded"))] == 1


def test_request_latency_histogram_per_app(live: LiveServer) -> None:
    """Requests through nginx show as `orchestry_app_request_duration_seconds` (buckets, sum, count), next to
    the p95 gauge, and the exposition still passes promtool."""
    assert post(live, hello("timed")).status_code == 201
    job = live.wait_job(_post(live, "timed/up", {"replicas": 1}).json()["job"]["id"])
    assert job["status"] == "succeeded", job
    proxy = f"http://127.0.0.1:{live.env['ORCHESTRY_PROXY_PORT']}"
    sent = 0

    def histogram() -> dict[str, float]:
        text = live.http.get("/metrics").text
        family = {f.name: f for f in text_string_to_metric_families(text)}["orchestry_app_request_duration_seconds"]
        return {
            s.name[len(family.name) :] + s.labels.get("le", ""): s.value
            for s in family.samples
            if s.labels["app"] == "timed"
        }

    with httpx.Client(timeout=10) as http:

        def counted() -> bool:
            nonlocal sent
            for _ in range(20):
                http.get(proxy + "/", headers={"Host": "timed.localhost"})
                sent += 1
            return histogram().get("_count", 0) > 0

        wait_for(counted, timeout=30, step=0.5)
    seen = histogram()
    assert family_type(live, "orchestry_app_request_duration_seconds") == "histogram"
    assert 0 < seen["_count"] <= sent and seen["_bucket+Inf"] == seen["_count"]
    assert 0 < seen["_sum"] < 10 * seen["_count"]
    les = sorted(float(k[len("_bucket") :]) for k in seen if k.startswith("_bucket"))
    assert les[0] == 0.005 and les[-1] == float("inf")
    bucket_counts = [seen[f"_bucket{le}"] for le in (repr(x) if x != float("inf") else "+Inf" for x in les)]
    assert bucket_counts == sorted(bucket_counts)  # cumulative
    text = live.http.get("/metrics").text
    assert 'orchestry_app_p95_latency_seconds{app="timed"}' in text  # the existing gauge stays
    promtool(text)


def family_type(live: LiveServer, name: str) -> str:
    families = {f.name: f for f in text_string_to_metric_families(live.http.get("/metrics").text)}
    return str(families[name].type)


H, B = LatencyHistogram, (5.0, 10.0)


@pytest.mark.parametrize(
    ("stored", "counts", "ms", "expected"),
    [
        (None, (1, 0, 2), 30.0, H(B, (1, 0, 2), 0.03)),
        (H(B, (1, 0, 2), 0.03), (0, 4, 0), 20.0, H(B, (1, 4, 2), 0.05)),
        (H((1.0, 10.0), (9, 9, 9), 5.0), (0, 4, 0), 20.0, H(B, (0, 4, 0), 0.02)),
        (H(B, (1, 0, 2), 0.03), (1, 2), 20.0, H(B, (1, 0, 2), 0.03)),
        (None, (0, -1, 0), 1.0, None),
    ],
    ids=["first", "adds", "new bounds restart", "wrong width ignored", "negative ignored"],
)
def test_accumulate(
    stored: LatencyHistogram | None, counts: tuple[int, ...], ms: float, expected: LatencyHistogram | None
) -> None:
    got = accumulate(stored, B, counts, ms)
    if expected is None:
        assert got is None
    else:
        assert got is not None and (got.bounds, got.counts) == (expected.bounds, expected.counts)
        assert got.sum_seconds == pytest.approx(expected.sum_seconds)


def test_cumulative_buckets_in_seconds() -> None:
    h = LatencyHistogram((5.0, 10.0), (1, 0, 2), 0.03)
    assert h.cumulative() == [(0.005, 1), (0.01, 1), (float("inf"), 3)]


def test_nginx_latency_sum_becomes_the_intervals_sum() -> None:
    body = {"bounds": [5, 10], "started": 1.0, "apps": {"a": {"requests": 3, "buckets": [1, 1, 1], "latency_ms": 40}}}
    before = Counters.from_json({**body, "apps": {"a": {"requests": 1, "buckets": [1, 0, 0], "latency_ms": 2.5}}}, 1.0)
    now = Counters.from_json(body, 3.0)
    assert now.apps["a"].latency_ms == 40.0
    assert traffic(before, now)["a"].latency_ms == 37.5
    assert combine([traffic(before, now), traffic(before, now)])["a"].latency_ms == 75.0
    assert Counters.from_json({**body, "apps": {"a": {"latency_ms": True}}}, 1.0).apps["a"].latency_ms == 0.0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("dup/scale", b'{"replicas": 1, "replicas": 0}'),
        ("dup/up", b'{"replicas": 0, "replicas": 1}'),
        ("dup/scaling", b'{"mode": "manual", "mode": "auto"}'),
    ],
)
def test_duplicate_json_keys_in_operation_bodies_are_400(live: LiveServer, path: str, body: bytes) -> None:
    assert post(live, hello("dup")).status_code == 201
    method = live.http.put if path.endswith("scaling") else live.http.post
    resp = method(f"/api/v1/apps/{path}", content=body, headers={"Content-Type": "application/json"})
    err = assert_error(resp, 400)
    assert err["fields"][0]["field"] in ("replicas", "mode") and "more than once" in err["fields"][0]["rule"]
    assert live.http.get("/api/v1/jobs", params={"app": "dup"}).json()["jobs"] == []


def test_a_non_ascii_health_check_header_value_is_refused(live: LiveServer) -> None:
    extra = "healthCheck:\n  path: /\n  port: 8080\n  headers:\n    - name: X-Probe\n      value: caf\u00e9\n"
    err = assert_error(post(live, (hello("hdr") + extra).encode()), 422)
    assert err["fields"][0]["field"] == "healthCheck.headers[0].value", err
    assert "printable ASCII" in err["fields"][0]["rule"]
    ok = "healthCheck:\n  path: /\n  port: 8080\n  headers:\n    - name: X-Probe\n      value: 'a b\t~'\n"
    assert post(live, (hello("hdr") + ok).encode()).status_code == 201


@pytest.mark.parametrize("key", ["org.orchestry.app", "org.orchestry.cluster", "Org.Orchestry.x", "orchestry.x"])
def test_the_reserved_label_prefix_is_orchestrys_real_one(live: LiveServer, key: str) -> None:
    spec = hello("lbl").replace("  name: lbl\n", f"  name: lbl\n  labels:\n    {key}: x\n")
    err = assert_error(post(live, spec), 422)
    assert err["fields"][0]["field"] == f'metadata.labels["{key}"]', err
    assert "'org.orchestry.'" in err["fields"][0]["rule"]


# -- the OpenAPI document describes the server ------------------------------------------------------------


def _walk_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _walk_keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_keys(item)


def test_the_document_uses_json_schema_keywords_and_types_the_policy(live: LiveServer) -> None:
    doc = live.http.get("/api/v1/openapi.json").json()
    assert not {"ge", "le", "gt", "lt"} & set(_walk_keys(doc["paths"]))
    spec = doc["paths"]["/api/v1/apps/{name}/spec"]["get"]
    (revision,) = [p for p in spec["parameters"] if p["name"] == "revision"]
    assert revision["schema"]["anyOf"][0] == {"minimum": 1, "type": "integer"}
    assert set(spec["responses"]["200"]["content"]) == {"application/json", "application/yaml"}
    put = doc["paths"]["/api/v1/apps/{name}/scaling"]["put"]["requestBody"]["content"]["application/json"]
    policy = doc["components"]["schemas"][put["schema"]["$ref"].rsplit("/", 1)[1]]
    assert policy["additionalProperties"] is False
    assert {k: v for k, v in policy["properties"]["maxReplicas"].items() if k != "title"} == {
        "default": 5,
        "minimum": 1,
        "type": "integer",
    }
    assert policy["properties"]["mode"]["enum"] == ["auto", "manual"]
    register = doc["paths"]["/api/v1/apps/register"]["post"]["requestBody"]["content"]
    assert set(register) == {"application/yaml", "application/json"}


def test_optional_bodies_headers_and_statuses_are_documented(live: LiveServer) -> None:
    doc = live.http.get("/api/v1/openapi.json").json()
    up = doc["paths"]["/api/v1/apps/{name}/up"]["post"]
    assert up["requestBody"]["required"] is False
    assert doc["paths"]["/api/v1/apps/{name}/scale"]["post"]["requestBody"]["required"] is True
    assert up["responses"]["202"]["headers"]["Location"]["required"] is True
    assert "WWW-Authenticate" in up["responses"]["401"]["headers"]
    assert "Retry-After" in up["responses"]["503"]["headers"]
    assert {"413", "415", "403", "404"} <= set(up["responses"])
    created = doc["paths"]["/api/v1/apps/register"]["post"]["responses"]["201"]
    assert created["headers"]["Location"]["required"] is True
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "503" in op["responses"], (method, path)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
    for op in ("up", "start", "down", "stop", "scale"):
        params = doc["paths"][f"/api/v1/apps/{{name}}/{op}"]["post"]["parameters"]
        (key,) = [p for p in params if p["name"] == "Idempotency-Key"]
        assert key["in"] == "header" and key["schema"]["maxLength"] == 128
    delete = doc["paths"]["/api/v1/apps/{name}"]["delete"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" for p in delete)


def test_register_answers_201_with_location(live: LiveServer) -> None:
    first = post(live, hello("located"))
    assert first.status_code == 201 and first.headers["Location"] == "/api/v1/apps/located"
    assert "Location" not in post(live, hello("located")).headers  # unchanged: 200, nothing created


def test_the_register_route_is_not_an_app(live: LiveServer) -> None:
    assert_error(live.http.get("/api/v1/apps/register"), 405)
    assert_error(live.http.delete("/api/v1/apps/register"), 405)
    allow = live.http.options("/api/v1/apps/register").headers["Allow"]
    assert set(allow.replace(" ", "").split(",")) == {"POST", "OPTIONS"}
    err = assert_error(post(live, hello("register")), 422)
    assert err["fields"][0]["field"] == "metadata.name" and "reserved" in err["fields"][0]["rule"]
    doc = live.http.get("/api/v1/openapi.json").json()
    (name,) = doc["paths"]["/api/v1/apps/{name}"]["get"]["parameters"]
    assert name["schema"]["not"] == {"const": "register"}


def test_null_scalars_are_refused_and_null_sections_documented(live: LiveServer) -> None:
    spec = hello("nulls") + "healthCheck:\n  protocol: null\n  port: 8080\n"
    err = assert_error(post(live, spec), 422)
    assert err["fields"][0]["field"] == "healthCheck.protocol"
    assert err["fields"][0]["rule"] == "must not be null (leave it out for its default)"
    empty = hello("nulls").replace("scaling:\n  mode: manual\n", "scaling:\ntermination: null\n")
    assert post(live, empty).status_code == 201  # empty sections are "not given"
    doc = live.http.get("/api/v1/openapi.json").json()
    app_spec = doc["components"]["schemas"]["AppSpec"]["properties"]
    assert {"type": "null"} in app_spec["scaling"]["anyOf"]
    assert "null" not in json.dumps(doc["components"]["schemas"]["HealthCheck"]["properties"]["protocol"])


def test_whole_numbers_written_as_floats_are_integers(live: LiveServer) -> None:
    spec = hello("floats").replace("  mode: manual\n", "  mode: manual\n  maxReplicas: 4.0\n  minReplicas: 0.0\n")
    assert post(live, spec).status_code == 201
    assert live.http.get("/api/v1/apps/floats").json()["max_replicas"] == 4
    accepted = live.http.post("/api/v1/apps/floats/scale", json={"replicas": 0.0})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["job"]["args"]["replicas"] == 0
    err = assert_error(live.http.post("/api/v1/apps/floats/scale", json={"replicas": 1.5}), 422)
    assert err["fields"][0]["field"] == "replicas"
    assert_error(live.http.post("/api/v1/apps/floats/scale", json={"replicas": True}), 422)
