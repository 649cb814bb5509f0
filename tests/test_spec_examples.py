"""examples/: every example loads as documented, and together they use every field of the format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestry.spec import load_specs, parse_documents, validate_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Every field path of ../shared/app-spec.md ("[]" stands for any list index).
APP_SPEC_PATHS = {
    "apiVersion",
    "kind",
    "metadata",
    "metadata.name",
    "metadata.labels",
    "spec",
    "spec.type",
    "spec.image",
    "spec.ports",
    "spec.ports[].containerPort",
    "spec.ports[].protocol",
    "spec.ports[].name",
    "spec.resources",
    "spec.resources.cpu",
    "spec.resources.memory",
    "spec.environment",
    "spec.env",
    "spec.environment[].name",
    "spec.environment[].value",
    "spec.environment[].source",
    "spec.environment[].key",
    "spec.command",
    "spec.args",
    "spec.workingDir",
    "spec.volumes",
    "spec.volumes[].name",
    "spec.volumes[].mountPath",
    "spec.healthCheck",
    "scaling",
    "scaling.mode",
    "scaling.minReplicas",
    "scaling.maxReplicas",
    "scaling.targetRPSPerReplica",
    "scaling.maxP95LatencyMs",
    "scaling.maxCPUPercent",
    "scaling.maxMemoryPercent",
    "scaling.maxConnPerReplica",
    "scaling.scaleOutThresholdPct",
    "scaling.scaleInThresholdPct",
    "scaling.windowSeconds",
    "scaling.cooldownSeconds",
    "scaling.maxScaleOutStep",
    "scaling.maxScaleInStep",
    "scaling.stabilizationWindowSeconds",
    "healthCheck",
    "healthCheck.protocol",
    "healthCheck.path",
    "healthCheck.port",
    "healthCheck.method",
    "healthCheck.headers",
    "healthCheck.headers[].name",
    "healthCheck.headers[].value",
    "healthCheck.body",
    "healthCheck.expectedStatusCodes",
    "healthCheck.initialDelaySeconds",
    "healthCheck.periodSeconds",
    "healthCheck.timeoutSeconds",
    "healthCheck.failureThreshold",
    "healthCheck.successThreshold",
    "termination",
    "termination.drainSeconds",
    "termination.gracePeriodSeconds",
}
# The variants app-spec.md names: each (path, value) appears in some example.
APP_SPEC_VARIANTS = {
    ("spec.type", "http"),
    ("spec.type", "worker"),
    ("spec.ports[].protocol", "HTTP"),
    ("spec.ports[].protocol", "TCP"),
    ("spec.environment[].key", "instance.ip"),
    ("spec.environment[].key", "instance.port"),
    ("spec.environment[].key", "app.name"),
    ("spec.environment[].key", "app.replicas"),
    ("scaling.mode", "auto"),
    ("scaling.mode", "manual"),
    ("healthCheck.protocol", "HTTP"),
    ("healthCheck.protocol", "TCP"),
    ("healthCheck.method", "GET"),
    ("healthCheck.method", "POST"),
}
# file -> (apps loaded, unknown-field warnings)
EXPECTED = {
    "hello.yaml": (1, []),
    "full.yaml": (1, []),
    "compact.yaml": (1, []),
    "worker.yaml": (1, []),
    "api.json": (1, []),
    "unknown-fields.yaml": (1, ["spec.ports[0].hostPort", "spec.sidecars", "replicas"]),
    "stack.yaml": (2, []),
}


def content_type(path: Path) -> str:
    return "application/json" if path.suffix == ".json" else "application/yaml"


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_example_loads(name: str) -> None:
    path = EXAMPLES / name
    count, warnings = EXPECTED[name]
    result = load_specs(path.read_bytes(), content_type(path))
    assert result.ok, [e.message for e in result.errors]
    assert len(result.specs) == count
    assert [w.path for w in result.warnings] == warnings
    assert all(w.rule == "unknown field, ignored" for w in result.warnings)


@pytest.mark.parametrize("name", EXPECTED)
def test_normalized_example_validates_to_itself(name: str) -> None:
    path = EXAMPLES / name
    for loaded in load_specs(path.read_bytes(), content_type(path)).specs:
        again, errors, warnings = validate_document(loaded.normalized)
        assert errors == [] and warnings == [] and again is not None
        assert again.content_hash == loaded.content_hash


def test_unknown_fields_example_is_refused_in_strict_mode() -> None:
    result = load_specs((EXAMPLES / "unknown-fields.yaml").read_bytes(), "application/yaml", strict=True)
    assert not result.ok and result.specs == ()
    assert {e.path for e in result.errors} == {"spec.ports[0].hostPort", "spec.sidecars", "replicas"}


def test_hello_is_the_quick_start_app() -> None:
    (loaded,) = load_specs((EXAMPLES / "hello.yaml").read_bytes(), "application/yaml").specs
    spec = loaded.spec
    assert spec.metadata.name == "hello" and spec.spec.image == "orchestry-testapp:latest"
    assert [p.container_port for p in spec.spec.ports] == [8080]
    assert (spec.health_check.path, spec.health_check.port) == ("/health", 8080)


def _used(value: Any, path: str, out: set[tuple[str, Any]]) -> None:
    """Collect (path, scalar value) pairs, list indices written as "[]"."""
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            out.add((sub, None))
            _used(item, sub, out)
    elif isinstance(value, list):
        for item in value:
            _used(item, path + "[]", out)
    else:
        out.add((path, value))


def _examples_used() -> set[tuple[str, Any]]:
    out: set[tuple[str, Any]] = set()
    for path in EXAMPLES.iterdir():
        for doc in parse_documents(path.read_bytes(), content_type(path)):
            _used(doc, "", out)
    # `env` items are `environment` items, and a health check under spec is a health check
    return out | {
        (p.replace("spec.env[]", "spec.environment[]").replace("spec.healthCheck.", "healthCheck."), v) for p, v in out
    }


def test_examples_cover_every_field_of_the_format() -> None:
    used = {path for path, _ in _examples_used()}
    assert APP_SPEC_PATHS - used == set()


def test_examples_cover_every_variant_of_the_format() -> None:
    assert APP_SPEC_VARIANTS - _examples_used() == set()
