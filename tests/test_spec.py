"""orchestry.spec: every rule of the app spec format, reported by path, and normalisation."""

from __future__ import annotations

import copy
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestry.spec import AppSpec, FieldIssue, LoadedSpec, load_specs, validate_document

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "App",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"image": "orchestry-testapp:latest", "ports": [{"containerPort": 8080}]},
}
DELETE = object()
_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def variant(changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with `{"spec.ports[0].containerPort": 0}`-style changes (DELETE removes the key)."""
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        parts: list[Any] = [int(i) if i else key for i, key in _PART.findall(path)]
        node: Any = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return doc


@dataclass(frozen=True)
class Case:
    changes: dict[str, Any]
    path: str
    rule: str
    options: dict[str, Any] = field(default_factory=dict)


WORKER = {"spec.type": "worker", "spec.ports": DELETE}
SDK = {"name": "IP", "source": "sdk", "key": "instance.ip"}
CASES: dict[str, Case] = {
    # document, apiVersion, kind
    "apiVersion missing": Case({"apiVersion": DELETE}, "apiVersion", "required"),
    "apiVersion wrong": Case({"apiVersion": "v2"}, "apiVersion", 'must be "v1"'),
    "apiVersion number": Case({"apiVersion": 1}, "apiVersion", 'must be "v1"'),
    "kind missing": Case({"kind": DELETE}, "kind", "required"),
    "kind wrong": Case({"kind": "Deployment"}, "kind", 'must be "App"'),
    # metadata
    "metadata missing": Case({"metadata": DELETE}, "metadata", "required"),
    "metadata a list": Case({"metadata": ["web"]}, "metadata", "must be a mapping"),
    "name missing": Case({"metadata.name": DELETE}, "metadata.name", "required"),
    "name uppercase": Case({"metadata.name": "Web"}, "metadata.name", "DNS label"),
    "name with ;{}": Case({"metadata.name": "web;{}"}, "metadata.name", "DNS label"),
    "name with newline": Case({"metadata.name": "web\nx"}, "metadata.name", "DNS label"),
    "name trailing newline": Case({"metadata.name": "web\n"}, "metadata.name", "DNS label"),
    "name 64 chars": Case({"metadata.name": "a" * 64}, "metadata.name", "at most 63 characters"),
    "name leading dash": Case({"metadata.name": "-web"}, "metadata.name", "DNS label"),
    "name a number": Case({"metadata.name": 42}, "metadata.name", "must be a string"),
    "labels a list": Case({"metadata.labels": ["a=b"]}, "metadata.labels", "must be a mapping"),
    "label value a number": Case({"metadata.labels.version": 1.1}, "metadata.labels.version", "quote numbers"),
    "label value too long": Case({"metadata.labels.app": "a" * 64}, "metadata.labels.app", "at most 63"),
    "label value bad": Case({"metadata.labels.app": "a b"}, "metadata.labels.app", "letters, digits"),
    "label key bad": Case({"metadata.labels.bad key": "x"}, 'metadata.labels["bad key"]', "key must be"),
    "label key reserved": Case(
        {"metadata.labels": {"orchestry.app": "x"}}, 'metadata.labels["orchestry.app"]', "reserved"
    ),
    # spec, type, image
    "spec missing": Case({"spec": DELETE}, "spec", "required"),
    "spec a string": Case({"spec": "web"}, "spec", "must be a mapping"),
    "type unknown": Case({"spec.type": "cron"}, "spec.type", "must be one of http, worker"),
    "image missing": Case({"spec.image": DELETE}, "spec.image", "required"),
    "image uppercase": Case({"spec.image": "Orchestry/App:1"}, "spec.image", "Docker image reference"),
    "image with space": Case({"spec.image": "my app:1"}, "spec.image", "Docker image reference"),
    "image bad tag": Case({"spec.image": "app:-bad"}, "spec.image", "Docker image reference"),
    "image bad digest": Case({"spec.image": "app@sha256:xyz"}, "spec.image", "Docker image reference"),
    "image too long": Case({"spec.image": "a" * 256}, "spec.image", "at most 255"),
    # a bare hex string is read by Docker as an image ID prefix: `image: "0"` started a foreign local image
    "image a short id": Case({"spec.image": "0"}, "spec.image", "repository name"),
    "image a hex prefix": Case({"spec.image": "deadbeef"}, "spec.image", "repository name"),
    "image a full hex id": Case({"spec.image": "a" * 64}, "spec.image", "repository name"),
    "image a short sha256 id": Case({"spec.image": "sha256:abc123"}, "spec.image", "repository name"),
    # ports
    "http without ports": Case({"spec.ports": []}, "spec.ports", "an http app needs at least one HTTP port"),
    "http with only TCP": Case(
        {"spec.ports[0].protocol": "TCP"}, "spec.ports", "an http app needs at least one HTTP port"
    ),
    "worker with ports": Case({"spec.type": "worker"}, "spec.ports", "a worker app has no ports"),
    "ports a mapping": Case({"spec.ports": {"containerPort": 80}}, "spec.ports", "must be a list"),
    "port item a scalar": Case({"spec.ports": [8080]}, "spec.ports[0]", "must be a mapping"),
    "port missing": Case({"spec.ports[0]": {"protocol": "HTTP"}}, "spec.ports[0].containerPort", "required"),
    "port zero": Case({"spec.ports[0].containerPort": 0}, "spec.ports[0].containerPort", "must be >= 1"),
    "port too high": Case({"spec.ports[0].containerPort": 65536}, "spec.ports[0].containerPort", "<= 65535"),
    "port a bool": Case({"spec.ports[0].containerPort": True}, "spec.ports[0].containerPort", "must be an integer"),
    "port a string": Case({"spec.ports[0].containerPort": "8080"}, "spec.ports[0].containerPort", "an integer"),
    "port a float": Case({"spec.ports[0].containerPort": 8080.5}, "spec.ports[0].containerPort", "an integer"),
    "port duplicate": Case(
        {"spec.ports": [{"containerPort": 8080}, {"containerPort": 8080}]},
        "spec.ports[1].containerPort",
        "unique",
    ),
    "protocol UDP": Case({"spec.ports[0].protocol": "UDP"}, "spec.ports[0].protocol", "must be one of HTTP, TCP"),
    "port name too long": Case({"spec.ports[0].name": "a" * 16}, "spec.ports[0].name", "at most 15"),
    "port name uppercase": Case({"spec.ports[0].name": "Web"}, "spec.ports[0].name", "DNS label"),
    "port name duplicate": Case(
        {"spec.ports": [{"containerPort": 1, "name": "web"}, {"containerPort": 2, "name": "web"}]},
        "spec.ports[1].name",
        "unique",
    ),
    # resources
    "resources a list": Case({"spec.resources": ["cpu"]}, "spec.resources", "must be a mapping"),
    "cpu below a millicore": Case({"spec.resources.cpu": "0.0005"}, "spec.resources.cpu", "millicores"),
    "cpu float below a millicore": Case({"spec.resources.cpu": 0.0005}, "spec.resources.cpu", "millicores"),
    "cpu zero": Case({"spec.resources.cpu": "0m"}, "spec.resources.cpu", "must be > 0"),
    "cpu too many cores": Case({"spec.resources.cpu": 65}, "spec.resources.cpu", "at most 64 cores"),
    "cpu words": Case({"spec.resources.cpu": "half"}, "spec.resources.cpu", "CPU quantity"),
    "cpu a bool": Case({"spec.resources.cpu": True}, "spec.resources.cpu", "CPU quantity"),
    "cpu infinite": Case({"spec.resources.cpu": float("inf")}, "spec.resources.cpu", "finite"),
    "memory below 6Mi": Case({"spec.resources.memory": "5Mi"}, "spec.resources.memory", "at least 6Mi"),
    "memory bytes below 6Mi": Case({"spec.resources.memory": 1024}, "spec.resources.memory", "at least 6Mi"),
    "memory docker unit": Case({"spec.resources.memory": "512m"}, "spec.resources.memory", "memory quantity"),
    "memory a float": Case({"spec.resources.memory": 1.5e9 + 0.5}, "spec.resources.memory", "memory quantity"),
    "memory fraction of a byte": Case({"spec.resources.memory": "6.0000001Mi"}, "spec.resources.memory", "whole"),
    # environment
    "env not a list": Case({"spec.environment": {"A": "b"}}, "spec.environment", "must be a list"),
    "env name bad": Case({"spec.environment": [{"name": "1A", "value": "x"}]}, "spec.environment[0].name", "letters"),
    "env name with dash": Case({"spec.environment": [{"name": "A-B"}]}, "spec.environment[0].name", "letters"),
    "env name missing": Case({"spec.environment": [{"value": "x"}]}, "spec.environment[0].name", "required"),
    "env name duplicate": Case(
        {"spec.environment": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "spec.environment[1].name",
        "unique",
    ),
    "env and environment": Case(
        {"spec.environment": [{"name": "A"}], "spec.env": [{"name": "B"}]}, "spec.env", "not both"
    ),
    "env alias bad name": Case({"spec.env": [{"name": "bad name"}]}, "spec.env[0].name", "letters"),
    "env secret and value": Case(
        {"spec.environment": [{"name": "A", "value": "x", "valueFrom": {"secret": "db"}}]},
        "spec.environment[0].valueFrom",
        "must not be given with value",
    ),
    "env secret name bad": Case(
        {"spec.environment": [{"name": "A", "valueFrom": {"secret": "Bad Name"}}]},
        "spec.environment[0].valueFrom.secret",
        "lowercase letters",
    ),
    "env valueFrom without secret": Case(
        {"spec.environment": [{"name": "A", "valueFrom": {}}]}, "spec.environment[0].valueFrom.secret", "required"
    ),
    "sdk key unknown": Case(
        {"spec.environment": [{**SDK, "key": "instance.id"}]},
        "spec.environment[0].key",
        "must be one of instance.ip",
    ),
    "sdk value with source": Case({"spec.environment": [{**SDK, "value": "x"}]}, "spec.environment[0].value", "source"),
    "sdk key without source": Case(
        {"spec.environment": [{"name": "A", "key": "app.name"}]}, "spec.environment[0].key", "requires source"
    ),
    "sdk source without key": Case(
        {"spec.environment": [{"name": "A", "source": "sdk"}]}, "spec.environment[0].key", "required"
    ),
    "sdk other source": Case(
        {"spec.environment": [{**SDK, "source": "vault"}]}, "spec.environment[0].source", 'must be "sdk"'
    ),
    "env value a number": Case(
        {"spec.environment": [{"name": "A", "value": 3}]},
        "spec.environment[0].value",
        "quote numbers and booleans",
    ),
    "env value a bool": Case(
        {"spec.environment": [{"name": "A", "value": False}]}, "spec.environment[0].value", "must be a string"
    ),
    "env value with NUL": Case(
        {"spec.environment": [{"name": "A", "value": "a\x00b"}]}, "spec.environment[0].value", "NUL"
    ),
    # command, args, workingDir, volumes
    "command a string": Case({"spec.command": "/bin/server"}, "spec.command", "must be a list"),
    "command empty": Case({"spec.command": []}, "spec.command", "must not be empty"),
    "args not strings": Case({"spec.args": ["--port", 8080]}, "spec.args[1]", "quote numbers"),
    "args with NUL": Case({"spec.args": ["a\x00"]}, "spec.args[0]", "NUL"),
    "workingDir relative": Case({"spec.workingDir": "app"}, "spec.workingDir", "absolute path"),
    "volumes a mapping": Case({"spec.volumes": {"data": "/data"}}, "spec.volumes", "must be a list"),
    "volume name bad": Case({"spec.volumes": [{"name": "-d", "mountPath": "/d"}]}, "spec.volumes[0].name", "letters"),
    "volume name too long": Case(
        {"spec.volumes": [{"name": "v" * 65, "mountPath": "/d"}]}, "spec.volumes[0].name", "at most 64"
    ),
    "volume mountPath relative": Case(
        {"spec.volumes": [{"name": "d", "mountPath": "data"}]}, "spec.volumes[0].mountPath", "absolute path"
    ),
    "volume mountPath missing": Case({"spec.volumes": [{"name": "d"}]}, "spec.volumes[0].mountPath", "required"),
    "volume mountPath root": Case(
        {"spec.volumes": [{"name": "d", "mountPath": "/"}]}, "spec.volumes[0].mountPath", "/"
    ),
    "volume name duplicate": Case(
        {"spec.volumes": [{"name": "d", "mountPath": "/a"}, {"name": "d", "mountPath": "/b"}]},
        "spec.volumes[1].name",
        "unique",
    ),
    "volume mountPath duplicate": Case(
        {"spec.volumes": [{"name": "a", "mountPath": "/data"}, {"name": "b", "mountPath": "/data/"}]},
        "spec.volumes[1].mountPath",
        "unique",
    ),
    # healthCheck
    "healthCheck in both places": Case(
        {"healthCheck": {"path": "/a"}, "spec.healthCheck": {"path": "/b"}}, "spec.healthCheck", "not both"
    ),
    "healthCheck a list": Case({"healthCheck": ["/health"]}, "healthCheck", "must be a mapping"),
    "health path relative": Case({"healthCheck.path": "health"}, "healthCheck.path", "must start with /"),
    "health path with space": Case({"healthCheck.path": "/he alth"}, "healthCheck.path", "spaces"),
    "health path under spec": Case({"spec.healthCheck": {"path": "x"}}, "spec.healthCheck.path", "start with /"),
    "health protocol": Case({"healthCheck.protocol": "GRPC"}, "healthCheck.protocol", "one of HTTP, TCP"),
    "health method": Case({"healthCheck.method": "PUT"}, "healthCheck.method", "must be one of GET, POST"),
    "health body with GET": Case({"healthCheck.body": "{}"}, "healthCheck.body", "POST"),
    "health port zero": Case({"healthCheck.port": 0}, "healthCheck.port", "must be >= 1"),
    "health port for worker": Case(
        {**WORKER, "healthCheck": {"path": "/h"}}, "healthCheck.port", "required when the app has no ports"
    ),
    "health codes empty": Case({"healthCheck.expectedStatusCodes": []}, "healthCheck.expectedStatusCodes", "empty"),
    "health code 600": Case({"healthCheck.expectedStatusCodes": [600]}, "healthCheck.expectedStatusCodes[0]", "<= 599"),
    "health code a string": Case(
        {"healthCheck.expectedStatusCodes": ["200"]},
        "healthCheck.expectedStatusCodes[0]",
        "must be an integer",
    ),
    "health timeout > period": Case(
        {"healthCheck.timeoutSeconds": 11}, "healthCheck.timeoutSeconds", "must be <= periodSeconds (10"
    ),
    "health period below a timeout given": Case(
        {"healthCheck.periodSeconds": 2, "healthCheck.timeoutSeconds": 3},
        "healthCheck.timeoutSeconds",
        "must be <= periodSeconds (2)",
    ),
    "health period zero": Case({"healthCheck.periodSeconds": 0}, "healthCheck.periodSeconds", "must be > 0"),
    "health delay negative": Case({"healthCheck.initialDelaySeconds": -1}, "healthCheck.initialDelaySeconds", ">= 0"),
    "health delay a bool": Case(
        {"healthCheck.initialDelaySeconds": True}, "healthCheck.initialDelaySeconds", "must be a number"
    ),
    "health delay nan": Case(
        {"healthCheck.initialDelaySeconds": float("nan")}, "healthCheck.initialDelaySeconds", "finite"
    ),
    "health failureThreshold 0": Case({"healthCheck.failureThreshold": 0}, "healthCheck.failureThreshold", ">= 1"),
    "health successThreshold float": Case(
        {"healthCheck.successThreshold": 1.5}, "healthCheck.successThreshold", "must be an integer"
    ),
    "health header name": Case(
        {"healthCheck.headers": [{"name": "X Probe", "value": "1"}]},
        "healthCheck.headers[0].name",
        "header name",
    ),
    "health header value CRLF": Case(
        {"healthCheck.headers": [{"name": "X", "value": "1\r\nEvil: 1"}]},
        "healthCheck.headers[0].value",
        "CR, LF",
    ),
    # scaling
    "scaling a list": Case({"scaling": [1, 5]}, "scaling", "must be a mapping"),
    "min above max": Case(
        {"scaling.minReplicas": 3, "scaling.maxReplicas": 2},
        "scaling.maxReplicas",
        "must be >= minReplicas (3)",
    ),
    "min above default max": Case({"scaling.minReplicas": 6}, "scaling.minReplicas", "<= maxReplicas (5, the default)"),
    "max over the cap": Case(
        {"scaling.maxReplicas": 51}, "scaling.maxReplicas", "must be <= 50 (the configured maximum)"
    ),
    "max over a custom cap": Case(
        {"scaling.maxReplicas": 11},
        "scaling.maxReplicas",
        "must be <= 10 (the configured maximum)",
        {"max_replicas": 10},
    ),
    "max zero": Case({"scaling.maxReplicas": 0}, "scaling.maxReplicas", "must be >= 1"),
    "min negative": Case({"scaling.minReplicas": -1}, "scaling.minReplicas", "must be >= 0"),
    "min a bool": Case({"scaling.minReplicas": False}, "scaling.minReplicas", "must be an integer"),
    "min a string": Case({"scaling.minReplicas": "2"}, "scaling.minReplicas", "must be an integer"),
    "max a float": Case({"scaling.maxReplicas": 2.5}, "scaling.maxReplicas", "must be an integer"),
    "mode unknown": Case({"scaling.mode": "off"}, "scaling.mode", "must be one of auto, manual"),
    "threshold order": Case(
        {"scaling.scaleInThresholdPct": 80, "scaling.scaleOutThresholdPct": 80},
        "scaling.scaleInThresholdPct",
        "must be < scaleOutThresholdPct (80)",
    ),
    "scale-out below default scale-in": Case(
        {"scaling.scaleOutThresholdPct": 20},
        "scaling.scaleOutThresholdPct",
        "> scaleInThresholdPct (30, the default)",
    ),
    "zero rps target": Case({"scaling.targetRPSPerReplica": 0}, "scaling.targetRPSPerReplica", "must be > 0"),
    "zero latency target": Case({"scaling.maxP95LatencyMs": 0}, "scaling.maxP95LatencyMs", "must be > 0"),
    "negative conn target": Case({"scaling.maxConnPerReplica": -5}, "scaling.maxConnPerReplica", "must be > 0"),
    "cpu percent over 100": Case({"scaling.maxCPUPercent": 101}, "scaling.maxCPUPercent", "must be <= 100"),
    "memory percent zero": Case({"scaling.maxMemoryPercent": 0}, "scaling.maxMemoryPercent", "must be > 0"),
    "scale-out pct over 100": Case({"scaling.scaleOutThresholdPct": 150}, "scaling.scaleOutThresholdPct", "<= 100"),
    "window zero": Case({"scaling.windowSeconds": 0}, "scaling.windowSeconds", "must be > 0"),
    "cooldown negative": Case({"scaling.cooldownSeconds": -1}, "scaling.cooldownSeconds", "must be >= 0"),
    "scale-out step zero": Case({"scaling.maxScaleOutStep": 0}, "scaling.maxScaleOutStep", "must be >= 1"),
    "scale-in step a bool": Case({"scaling.maxScaleInStep": True}, "scaling.maxScaleInStep", "must be an integer"),
    "stabilization negative": Case(
        {"scaling.stabilizationWindowSeconds": -1}, "scaling.stabilizationWindowSeconds", ">= 0"
    ),
    # termination
    "termination a scalar": Case({"termination": 30}, "termination", "must be a mapping"),
    "drain negative": Case({"termination.drainSeconds": -1}, "termination.drainSeconds", "must be >= 0"),
    "grace a string": Case({"termination.gracePeriodSeconds": "30s"}, "termination.gracePeriodSeconds", "a number"),
    "grace over a day": Case({"termination.gracePeriodSeconds": 90_000}, "termination.gracePeriodSeconds", "<= 86400"),
    # strict mode
    "strict unknown field": Case({"spec.sidecars": []}, "spec.sidecars", "unknown field", {"strict": True}),
    "strict unknown nested": Case(
        {"spec.ports[0].hostPort": 80}, "spec.ports[0].hostPort", "unknown field", {"strict": True}
    ),
    "strict snake_case": Case({"scaling.min_replicas": 2}, "scaling.min_replicas", "unknown field", {"strict": True}),
}


def test_base_is_valid() -> None:
    loaded, errors, warnings = validate_document(BASE)
    assert loaded is not None and errors == [] and warnings == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_invalid_spec(case: Case) -> None:
    loaded, errors, _ = validate_document(variant(case.changes), **case.options)
    assert loaded is None
    rules = {e.path: e.rule for e in errors}
    assert case.path in rules, f"no error at {case.path}: {[e.message for e in errors]}"
    assert case.rule in rules[case.path]


def test_invalid_table_is_large() -> None:
    assert len(CASES) >= 45


@pytest.mark.parametrize("doc", [[], "web", 3, None], ids=["list", "string", "number", "null"])
def test_document_must_be_a_mapping(doc: object) -> None:
    loaded, errors, _ = validate_document(doc, document=2)
    assert loaded is None
    assert errors == [FieldIssue("<document>", "must be a mapping", 2)]


def test_every_mistake_of_a_document_is_reported() -> None:
    body = """
apiVersion: v2
kind: App
metadata: {name: My_App, labels: [x]}
spec:
  image: "Bad Image"
  ports: [{containerPort: 0}, {containerPort: 8080, protocol: UDP}]
  resources: {cpu: "0.0001", memory: 1Ki}
  env: [{name: A, value: 1}, {name: A, source: sdk, key: nope}]
  volumes: [{name: v, mountPath: rel}]
  workingDir: here
healthCheck: {path: nope, method: GET, body: hi, timeoutSeconds: 30}
scaling: {minReplicas: 4, maxReplicas: 2, scaleInThresholdPct: 90, windowSeconds: 0, maxCPUPercent: 120}
termination: {drainSeconds: -3}
sidecars: true
"""
    result = load_specs(body, "application/yaml")
    assert not result.ok
    assert all(e.document == 0 for e in result.errors)
    assert {e.path for e in result.errors} >= {
        "apiVersion",
        "metadata.name",
        "metadata.labels",
        "spec.image",
        "spec.ports[0].containerPort",
        "spec.ports[1].protocol",
        "spec.resources.cpu",
        "spec.resources.memory",
        "spec.env[0].value",
        "spec.env[1].name",
        "spec.env[1].key",
        "spec.volumes[0].mountPath",
        "spec.workingDir",
        "healthCheck.path",
        "healthCheck.body",
        "healthCheck.timeoutSeconds",
        "scaling.maxReplicas",
        "scaling.scaleInThresholdPct",
        "scaling.windowSeconds",
        "scaling.maxCPUPercent",
        "termination.drainSeconds",
    }
    assert [w.message for w in result.warnings] == ["sidecars: unknown field, ignored"]
    messages = [e.message for e in result.errors]
    assert "scaling.maxReplicas: must be >= minReplicas (4)" in messages
    assert len(messages) == len(set(messages))


def test_cross_field_rules_skip_invalid_fields() -> None:
    """minReplicas is invalid, so maxReplicas is not compared with it (one error, not two)."""
    _, errors, _ = validate_document(variant({"scaling.minReplicas": "9", "scaling.maxReplicas": 2}))
    assert [e.message for e in errors] == ["scaling.minReplicas: must be an integer"]


def test_unknown_fields_are_warnings_by_path() -> None:
    doc = variant({"extra": 1, "spec.sidecars": [], "spec.ports[0].hostPort": 80, "healthCheck.retries": 3})
    loaded, errors, warnings = validate_document(doc)
    assert errors == [] and loaded is not None
    assert [w.message for w in warnings] == [
        "spec.ports[0].hostPort: unknown field, ignored",
        "spec.sidecars: unknown field, ignored",
        "healthCheck.retries: unknown field, ignored",
        "extra: unknown field, ignored",
    ]
    assert loaded.warnings == tuple(warnings)
    assert "sidecars" not in json.dumps(loaded.normalized)


@pytest.mark.parametrize(
    ("health", "timeout", "warned"),
    [
        ({"healthCheck.periodSeconds": 2}, 2, True),  # was refused: "must be >= timeoutSeconds (5, the default)"
        ({"healthCheck.periodSeconds": 0.5}, 0.5, True),
        ({"healthCheck.periodSeconds": 5}, 5, False),
        ({"healthCheck.periodSeconds": 7}, 5, False),
        ({"healthCheck.periodSeconds": 2, "healthCheck.timeoutSeconds": 1}, 1, False),
    ],
)
def test_a_period_given_alone_bounds_the_default_timeout(health: dict[str, Any], timeout: float, warned: bool) -> None:
    for strict in (False, True):
        loaded, errors, warnings = validate_document(variant(health), strict=strict)
        assert errors == [] and loaded is not None
        assert loaded.normalized["healthCheck"]["timeoutSeconds"] == timeout
        expected = [f"healthCheck.timeoutSeconds: not given: defaults to periodSeconds ({timeout:g}) instead of 5"]
        assert [w.message for w in warnings] == (expected if warned else [])


def test_strict_mode_turns_warnings_into_errors() -> None:
    result = load_specs(json.dumps(variant({"spec.sidecars": []})), "application/json", strict=True)
    assert not result.ok and result.warnings == () and result.specs == ()
    assert [e.message for e in result.errors] == ["spec.sidecars: unknown field"]


def test_null_means_not_given() -> None:
    loaded, errors, _ = validate_document(variant({"scaling": None, "spec.ports[0].name": None}))
    assert errors == [] and loaded is not None
    assert loaded.spec.scaling.max_replicas == 5
    _, errors, _ = validate_document(variant({"spec.image": None}))
    assert [e.message for e in errors] == ["spec.image: required"]


def test_surrogates_are_refused() -> None:
    _, errors, _ = validate_document(variant({"metadata.labels.app": "\ud800"}))
    assert [e.message for e in errors] == ["metadata.labels.app: must be valid Unicode text"]


def test_accepted_values() -> None:
    """Values at the edges of each rule that must load."""
    doc = variant(
        {
            "metadata.name": "a" * 63,
            "metadata.labels": {"app.kubernetes.io/name": "x", "empty": ""},
            "spec.image": "registry.example.com:5000/team/api_v2:1.10-rc.1@sha256:" + "a" * 64,
            "spec.ports": [
                {"containerPort": 65535, "protocol": "TCP"},
                {"containerPort": 1, "name": "a" * 15},
            ],
            "spec.resources": {"cpu": "64", "memory": "6Mi"},
            "spec.environment": [{"name": "_X1", "value": "no"}, {"name": "E"}],
            "healthCheck": {
                "method": "POST",
                "body": "x",
                "timeoutSeconds": 10,
                "expectedStatusCodes": [100, 599],
            },
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 50,
                "scaleOutThresholdPct": 100,
                "cooldownSeconds": 0,
            },
            "termination": {"drainSeconds": 0, "gracePeriodSeconds": 0.5},
        }
    )
    loaded, errors, _ = validate_document(doc)
    assert errors == [], [e.message for e in errors]
    assert loaded is not None
    assert loaded.spec.health_check.port == 1  # the first HTTP port, not the first port
    assert loaded.spec.spec.environment[1].value == ""


def test_an_env_value_from_a_secret_keeps_only_the_secret_name() -> None:
    loaded, errors, _ = validate_document(
        variant({"spec.environment": [{"name": "DB", "valueFrom": {"secret": "db-pw"}}]})
    )
    assert errors == [], [e.message for e in errors]
    assert loaded is not None
    assert loaded.normalized["spec"]["environment"] == [{"name": "DB", "valueFrom": {"secret": "db-pw"}}]


@pytest.mark.parametrize(
    "image", ["sha256:" + "0" * 64, "0:1", "deadbeef:latest", "library/deadbeef", "beef@sha256:" + "1" * 64, "ubuntu"]
)
def test_image_references_that_name_a_repository_or_a_full_digest(image: str) -> None:
    loaded, errors, _ = validate_document(variant({"spec.image": image}))
    assert errors == [], [e.message for e in errors]
    assert loaded is not None and loaded.spec.spec.image == image


# --- normalisation and the typed model ---------------------------------------------------------------------


def load_one(body: str | dict[str, Any], content_type: str | None = None, **options: Any) -> LoadedSpec:
    if isinstance(body, dict):
        body, content_type = json.dumps(body), "application/json"
    result = load_specs(body, content_type, **options)
    assert result.ok, [e.message for e in result.errors]
    (loaded,) = result.specs
    return loaded


PLAIN = """
apiVersion: v1
kind: App
metadata:
  name: web
spec:
  image: orchestry-testapp:latest
  ports:
    - containerPort: 8080
  resources:
    cpu: "0.5"
    memory: 512Mi
  environment:
    - name: LOG_LEVEL
      value: info
healthCheck:
  path: /health
"""
EQUIVALENT = {
    "comments and key order": """
# a comment
healthCheck: {path: /health}   # inline comment
spec:
  environment: [{value: info, name: LOG_LEVEL}]
  resources: {memory: 536870912, cpu: 500m}
  ports: [{protocol: HTTP, containerPort: 8080}]
  image: orchestry-testapp:latest
metadata: {name: web, labels: {}}
kind: App
apiVersion: v1
""",
    "env and healthCheck under spec": """
apiVersion: v1
kind: App
metadata: {name: web}
spec:
  image: orchestry-testapp:latest
  ports: [{containerPort: 8080}]
  resources: {cpu: 0.5, memory: "536870912"}
  env: [{name: LOG_LEVEL, value: info}]
  healthCheck: {path: /health}
""",
    "defaults written out": PLAIN
    + """
scaling: {mode: auto, minReplicas: 1, maxReplicas: 5, windowSeconds: 60.0, cooldownSeconds: 180}
termination: {drainSeconds: 30, gracePeriodSeconds: 30}
""",
}


@pytest.mark.parametrize("body", EQUIVALENT.values(), ids=EQUIVALENT.keys())
def test_equivalent_specs_hash_the_same(body: str) -> None:
    base = load_one(PLAIN)
    other = load_one(body)
    assert other.normalized == base.normalized
    assert other.content_hash == base.content_hash


def test_json_and_yaml_hash_the_same() -> None:
    yaml_spec = load_one(PLAIN)
    assert load_one(yaml_spec.normalized).content_hash == yaml_spec.content_hash


@pytest.mark.parametrize(
    "change",
    ["image: orchestry-testapp:v2", "cpu: 600m", "value: debug", "path: /healthz", "containerPort: 8081"],
)
def test_a_changed_field_changes_the_hash(change: str) -> None:
    key = change.split(":")[0]
    line = next(line for line in PLAIN.splitlines() if line.strip().startswith(("- " + key, key)))
    body = PLAIN.replace(line, line[: line.index(key)] + change)
    assert body != PLAIN
    assert load_one(body).content_hash != load_one(PLAIN).content_hash


def test_normalized_form() -> None:
    loaded = load_one(PLAIN)
    norm = loaded.normalized
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", loaded.content_hash)
    assert norm["spec"]["resources"] == {"cpu": "500m", "memory": 512 * 1024**2}
    assert norm["spec"]["environment"] == [{"name": "LOG_LEVEL", "value": "info"}]
    assert "env" not in norm["spec"] and "healthCheck" not in norm["spec"]
    assert norm["healthCheck"]["port"] == 8080 and norm["healthCheck"]["periodSeconds"] == 10
    assert norm["scaling"]["maxReplicas"] == 5 and norm["termination"] == {
        "drainSeconds": 30,
        "gracePeriodSeconds": 30,
    }
    assert json.loads(json.dumps(norm, allow_nan=False)) == norm


def test_normalized_form_validates_to_itself() -> None:
    loaded = load_one(PLAIN)
    again, errors, warnings = validate_document(loaded.normalized)
    assert errors == [] and warnings == [] and again is not None
    assert again.normalized == loaded.normalized and again.content_hash == loaded.content_hash


def test_typed_model_attributes() -> None:
    spec = load_one(PLAIN).spec
    assert isinstance(spec, AppSpec)
    assert spec.metadata.name == "web" and spec.metadata.labels == {}
    assert spec.spec.type == "http" and spec.spec.image == "orchestry-testapp:latest"
    assert (spec.spec.ports[0].container_port, spec.spec.ports[0].protocol, spec.spec.ports[0].name) == (
        8080,
        "HTTP",
        None,
    )
    assert spec.spec.resources.cpu_millicores == 500 and spec.spec.resources.memory_bytes == 512 * 1024**2
    env = spec.spec.environment[0]
    assert (env.name, env.value, env.source, env.key) == ("LOG_LEVEL", "info", None, None)
    assert spec.spec.command is None and spec.spec.args is None and spec.spec.working_dir is None
    assert spec.spec.volumes == []
    hc = spec.health_check
    assert (hc.protocol, hc.path, hc.port, hc.method, hc.expected_status_codes) == (
        "HTTP",
        "/health",
        8080,
        "GET",
        None,
    )
    assert (hc.period_seconds, hc.timeout_seconds, hc.failure_threshold, hc.success_threshold) == (
        10,
        5,
        3,
        1,
    )
    s = spec.scaling
    assert (s.mode, s.min_replicas, s.max_replicas, s.target_rps_per_replica) == ("auto", 1, 5, 50)
    assert (s.max_p95_latency_ms, s.max_cpu_percent, s.max_memory_percent, s.max_conn_per_replica) == (
        250,
        70,
        75,
        100,
    )
    assert (s.scale_out_threshold_pct, s.scale_in_threshold_pct, s.window_seconds, s.cooldown_seconds) == (
        80,
        30,
        60,
        180,
    )
    assert (s.max_scale_out_step, s.max_scale_in_step, s.stabilization_window_seconds) == (2, 1, 300)
    assert (spec.termination.drain_seconds, spec.termination.grace_period_seconds) == (30, 30)
    with pytest.raises(ValueError):
        spec.metadata.name = "other"  # type: ignore[misc]


def test_worker_without_health_check_has_no_probe_port() -> None:
    loaded = load_one(variant({"spec.type": "worker", "spec.ports": DELETE}))
    assert loaded.spec.health_check.port is None
    assert "port" not in loaded.normalized["healthCheck"]


def test_worker_health_check_at_its_defaults_is_no_health_check() -> None:
    """`healthCheck: {}` equals no health check; setting any field needs a port (see the CASES table)."""
    plain = load_one(variant({"spec.type": "worker", "spec.ports": DELETE}))
    empty = load_one(variant({"spec.type": "worker", "spec.ports": DELETE, "spec.healthCheck": {}}))
    assert empty.content_hash == plain.content_hash
    probed = load_one(variant({"spec.type": "worker", "spec.ports": DELETE, "healthCheck": {"port": 9000}}))
    assert probed.spec.health_check.port == 9000


def test_default_max_replicas_respects_a_lower_cap() -> None:
    loaded = load_one(BASE, max_replicas=3)
    assert loaded.spec.scaling.max_replicas == 3


def test_json_schema_is_valid() -> None:
    jsonschema = importlib.import_module("jsonschema")  # a dev dependency (via openapi-spec-validator): never skip
    schema = AppSpec.model_json_schema(by_alias=True)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(load_one(PLAIN).normalized, schema)
    assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["required"])
    assert "maxCPUPercent" in schema["$defs"]["Scaling"]["properties"]
