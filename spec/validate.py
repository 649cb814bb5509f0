"""Documents -> typed, normalised app specs, or every problem of every document at once.

The pipeline of one document: prepare (fold aliases, find unknown fields) -> field validation by the
strict models -> cross-field rules -> defaults that depend on other fields -> the normalised dict and its
hash. The hash is what makes "register the same spec again" a no-op, so everything that does not change
what runs (comments, key order, `env` vs `environment`, "0.5" vs "500m") is normalised away first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .errors import pydantic_issues
from .issues import DOCUMENT, FieldIssue, Loc, format_path
from .model import AppSpec
from .parse import parse_documents_with_text
from .prepare import Prepared, order_key, prepare
from .rules import check_rules

UNKNOWN_WARNING = "unknown field, ignored"
UNKNOWN_ERROR = "unknown field"
DUPLICATE_NAME = "duplicate name in this request"
PLACEMENT_NEEDS_SWARM = (
    "needs the swarm runtime (runtime: swarm, ORCHESTRY_RUNTIME=swarm): this Orchestry runs its replicas on one "
    "Docker engine (runtime: docker), where there is nothing to place"
)


@dataclass(frozen=True)
class LoadedSpec:
    """A valid app spec: the typed model, its canonical dict, that dict's hash, and its warnings."""

    spec: AppSpec
    normalized: dict[str, Any]
    content_hash: str
    warnings: tuple[FieldIssue, ...]
    raw: str = ""  # the document's own text, as submitted (set by load_specs)


@dataclass(frozen=True)
class LoadResult:
    """Every valid spec of a body, and every error and warning of all its documents."""

    specs: tuple[LoadedSpec, ...]
    errors: tuple[FieldIssue, ...]
    warnings: tuple[FieldIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def validate_document(
    doc: object, *, max_replicas: int = 50, strict: bool = False, document: int = 0, placement: bool = True
) -> tuple[LoadedSpec | None, list[FieldIssue], list[FieldIssue]]:
    """Validate one parsed document: (spec or None, errors, warnings). `max_replicas` is the cluster's cap;
    `placement` False refuses a `placement` section (the runtime has a single host)."""
    if not isinstance(doc, dict):
        return None, [FieldIssue(DOCUMENT, "must be a mapping", document)], []
    prepared = prepare(doc)
    found = list(prepared.errors)
    spec: AppSpec | None = None
    try:
        spec = AppSpec.model_validate(prepared.doc)
    except ValidationError as exc:
        found += pydantic_issues(exc)
    rules = check_rules(prepared.doc, {loc for loc, _ in found}, max_replicas)
    found += rules.issues
    if not placement and prepared.doc.get("placement") is not None:
        found.append((("placement",), PLACEMENT_NEEDS_SWARM))
    unknown = [(loc, UNKNOWN_ERROR if strict else UNKNOWN_WARNING) for loc in prepared.unknown]
    errors = _issues(prepared, found + (unknown if strict else []), document)
    warnings = [] if strict else _issues(prepared, unknown, document)
    warnings += _issues(prepared, rules.notes, document)  # values filled in: warnings even when strict
    if errors or spec is None:
        return None, errors, warnings
    spec = _complete(spec, rules.max_replicas_default, rules.timeout_default)
    normalized = _tidy(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    # Left out at their defaults, so that specs written before routes existed keep their content hash.
    if not normalized.get("routes"):
        normalized.pop("routes", None)
    if normalized.get("defaultRoute") is True:
        normalized.pop("defaultRoute", None)
    return LoadedSpec(spec, normalized, content_hash(normalized), tuple(warnings)), [], warnings


def load_specs(
    body: bytes | str, content_type: str | None, *, max_replicas: int = 50, strict: bool = False, placement: bool = True
) -> LoadResult:
    """Parse and validate a request body; raises SpecParseError / UnsupportedMediaType for bad bodies.
    `placement` False: the runtime cannot place replicas, and a `placement` section is an error."""
    specs: list[LoadedSpec] = []
    errors: list[FieldIssue] = []
    warnings: list[FieldIssue] = []
    names: set[str] = set()
    for index, document in enumerate(parse_documents_with_text(body, content_type)):
        doc = document.value
        loaded, errs, warns = validate_document(
            doc, max_replicas=max_replicas, strict=strict, document=index, placement=placement
        )
        if loaded is not None:
            loaded = dataclasses.replace(loaded, raw=document.text)
        name = _valid_name(doc, errs)
        if name is not None and name in names:
            errs.append(FieldIssue("metadata.name", DUPLICATE_NAME, index))
            loaded = None
        if name is not None:
            names.add(name)
        if loaded is not None:
            specs.append(loaded)
        errors += errs
        warnings += warns
    return LoadResult(tuple(specs), tuple(errors), tuple(warnings))


def content_hash(normalized: dict[str, Any]) -> str:
    """The spec's identity, "sha256:<hex>" of its canonical JSON: equal specs hash equal."""
    canonical = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _issues(prepared: Prepared, found: list[tuple[Loc, str]], document: int) -> list[FieldIssue]:
    """Locations -> user paths; one issue per path (the first found is the most basic)."""
    out: dict[str, FieldIssue] = {}
    for loc, rule in sorted(found, key=lambda issue: order_key(issue[0])):
        path = format_path(prepared.remap(loc))
        out.setdefault(path, FieldIssue(path, rule, document))
    return list(out.values())


def _complete(spec: AppSpec, max_replicas_default: int | None, timeout_default: float | None = None) -> AppSpec:
    """Fill defaults that depend on other fields: the health check port, a clamped maxReplicas, a timeout
    no longer than the period given alone."""
    health, scaling = spec.health_check, spec.scaling
    if timeout_default is not None:
        health = health.model_copy(update={"timeout_seconds": timeout_default})
    ports = spec.spec.ports
    if health.port is None and ports:
        http = [p for p in ports if p.protocol == "HTTP"]
        health = health.model_copy(update={"port": (http or ports)[0].container_port})
    if max_replicas_default is not None:
        scaling = scaling.model_copy(update={"max_replicas": max_replicas_default})
    return spec.model_copy(update={"health_check": health, "scaling": scaling})


def _tidy(value: Any) -> Any:
    """10.0 -> 10, so that the normalised spec reads as written (floats stay floats otherwise)."""
    if isinstance(value, dict):
        return {key: _tidy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_tidy(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _valid_name(doc: object, errors: list[FieldIssue]) -> str | None:
    if any(e.path in ("metadata", "metadata.name") for e in errors) or not isinstance(doc, dict):
        return None
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None
