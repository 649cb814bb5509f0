"""The OpenAPI 3.1 document, generated from the live routes and the pydantic models that validate.

Each view declares what it takes and answers with `@operation(...)`; the document walks Flask's URL map,
so a route that exists is documented and a documented route exists. Schemas come from the same pydantic
models the handlers use, never from a copy kept by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue, models_json_schema
from werkzeug.routing import BaseConverter

from orchestry.spec.fields import SECRET_NAME
from orchestry.workflows.registry import SERVER_PATTERN

F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
Mode = JsonSchemaMode
Refs = dict[tuple[type[Any], JsonSchemaMode], JsonSchemaValue]


@dataclass(frozen=True)
class Body:
    model: type[BaseModel]
    content_types: tuple[str, ...] = ("application/json",)
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | str]
    query: type[BaseModel] | None = None
    body: Body | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    idempotency_key: bool = False
    also: dict[int, dict[str, Any]] = field(default_factory=dict)  # status -> other media type -> schema


def operation(
    summary: str,
    *,
    tag: str,
    responses: dict[int, type[BaseModel] | str],
    query: type[BaseModel] | None = None,
    body: Body | None = None,
    description: str = "",
    idempotency_key: bool = False,
    also: dict[int, dict[str, Any]] | None = None,
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function; the view is unchanged."""

    def wrap(view: F) -> F:
        view.__openapi__ = Operation(  # type: ignore[attr-defined]
            summary, tag, responses, query, body, description, idempotency_key=idempotency_key, also=also or {}
        )
        return view

    return wrap


_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-zA-Z_]+)>")
_TYPED = re.compile(r"<([a-z]+)(?:\([^)]*\))?:([a-zA-Z_]+)>")


class AppNameConverter(BaseConverter):
    """An app name in `/apps/<name>`, except `register` (`POST /apps/register` registers; no app has that
    name), so that `/apps/register` matches only the register route."""

    regex = r"(?!register$)[^/]{1,253}"


class SecretNameConverter(BaseConverter):
    """A secret's name in `/secrets/<name>`: any path segment matches (the handler names the rule of a bad
    one); the document gives the rule as a pattern, so a client knows which names exist at all."""

    regex = r"[^/]{1,253}"


class RegistryServerConverter(BaseConverter):
    """A registry's `host[:port]` in `/registries/<server>`: any path segment matches (the handler names the rule
    of a bad one)."""

    regex = r"[^/]{1,255}"


# The path parameter's schema by converter; any other is a string.
_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "secret": {"type": "string", "maxLength": 253, "pattern": f"^{SECRET_NAME}$"},
    "registry": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": SERVER_PATTERN},
    "int": {"type": "integer", "minimum": 0},
    "app": {"type": "string", "minLength": 1, "maxLength": 253, "not": {"const": "register"}},
    "string": {"type": "string", "minLength": 1, "maxLength": 253},
}
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No content",
    400: "Malformed request",
    401: "Token missing or invalid",
    403: "Token lacks the operator role, a cross-site write, or (no token) a non-loopback Host",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported content type (writes: application/json, application/yaml, application/x-yaml)",
    422: "Validation failed",
    503: (
        "Unavailable: the database cannot be reached or is busy (retry after Retry-After), or no API token "
        "exists on a non-loopback node"
    ),
}


_STRING = {"type": "string"}
# Response headers the server sends with these statuses (`required`: always).
_HEADERS: dict[str, dict[str, Any]] = {
    "201": {"Location": {"description": "the created resource", "required": True, "schema": _STRING}},
    "202": {"Location": {"description": "the job to follow", "required": True, "schema": _STRING}},
    "401": {"WWW-Authenticate": {"description": 'Bearer realm="orchestry"', "required": True, "schema": _STRING}},
    "405": {"Allow": {"description": "the methods this path takes", "required": True, "schema": _STRING}},
    "503": {
        "Retry-After": {"description": "seconds to wait before retrying (database unavailable)", "schema": _STRING}
    },
}


def build_document(app: Flask, *, title: str, version: str, error_model: type[BaseModel]) -> dict[str, Any]:
    wanted: set[tuple[type[BaseModel], Mode]] = {(error_model, "serialization")}
    ops: list[tuple[str, str, Operation, list[tuple[str, str]]]] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        op = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if op is None:
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        kinds = {name: kind for kind, name in _TYPED.findall(rule.rule)}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            ops.append((path, method.lower(), op, [(a, kinds.get(a, "")) for a in sorted(rule.arguments)]))
        wanted.update((m, "serialization") for m in op.responses.values() if isinstance(m, type))
        if op.body:
            wanted.add((op.body.model, "validation"))

    refs, defs = models_json_schema(
        sorted(wanted, key=lambda p: (p[0].__name__, p[1])), ref_template=REF, by_alias=True
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    for model in _models_within({m for m, _ in wanted}):
        if getattr(model, "__null_is_absent__", False):
            for name, schema in schemas.items():
                if name == model.__name__ or name.startswith(model.__name__ + "-"):
                    _null_sections(schema)
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, args in ops:
        paths.setdefault(path, {})[method] = _operation_doc(path, method, op, args, error_model, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def _models_within(models: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """`models` and every model their fields use, at any depth."""
    seen: set[type[BaseModel]] = set()
    todo = list(models)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for info in model.model_fields.values():
            todo.extend(_models_in(info.annotation))
    return seen


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _null_sections(schema: dict[str, Any]) -> None:
    """A model whose sections, lists and maps may be given as null, meaning "not given" (the spec format:
    YAML writes an empty value as null): say so in its optional properties that are objects or arrays."""
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        if name in required or "anyOf" in prop:
            continue
        if "$ref" in prop or prop.get("type") in ("object", "array"):
            keep = {k: v for k, v in prop.items() if k in ("default", "description", "title")}
            inner = {k: v for k, v in prop.items() if k not in keep}
            schema["properties"][name] = {"anyOf": [inner, {"type": "null"}], **keep}


def _operation_doc(
    path: str,
    method: str,
    op: Operation,
    args: list[tuple[str, str]],
    error_model: type[BaseModel],
    refs: Refs,
) -> dict[str, Any]:
    def ref(model: type[BaseModel], mode: Mode = "serialization") -> Any:
        return refs[(model, mode)]

    params: list[dict[str, Any]] = [
        {"name": a, "in": "path", "required": True, "schema": dict(_PARAM_SCHEMAS.get(kind, {"type": "string"}))}
        for a, kind in args
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if op.idempotency_key:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Retrying with the same key (same method, path, caller and request) answers the job "
                "the first request created; the same key with a different request is a 422.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x20-\\x7e]+$"},
            }
        )
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "Response")}
        if isinstance(model, type):
            entry["content"] = {"application/json": {"schema": ref(model)}}
        elif model:
            entry["content"] = {model: {"schema": {"type": "string"}}}
        for media_type, schema in op.also.get(status, {}).items():
            content = entry.setdefault("content", {})
            if media_type in content:  # another shape in the same media type (chosen by a query parameter)
                content[media_type] = {"schema": {"anyOf": [content[media_type]["schema"], schema]}}
            else:
                content[media_type] = {"schema": schema}
        responses[str(status)] = entry
    # Every request: auth and the browser guards (web/auth.py); writes also their media type.
    implied = [400, 401, 403, 503] + ([415] if method != "get" else []) + ([413] if op.body is not None else [])
    implied += [404] if args else []  # no such app or job, or a path segment the route does not take
    implied += [405] if any(kind == "app" for _, kind in args) else []  # `/apps/register` takes POST only
    for status in implied:
        responses.setdefault(
            str(status),
            {"description": _STATUS_TEXT[status], "content": {"application/json": {"schema": ref(error_model)}}},
        )
    for code, answer in responses.items():
        if code in _HEADERS:
            answer["headers"] = {**_HEADERS[code], **answer.get("headers", {})}
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
        "parameters": params,
        "responses": responses,
    }
    if op.description:
        doc["description"] = op.description
    if op.body is not None:
        doc["requestBody"] = {
            "required": op.body.required,
            "description": op.body.description,
            "content": {ct: {"schema": ref(op.body.model, "validation")} for ct in op.body.content_types},
        }
    return doc
