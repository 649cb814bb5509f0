"""The OpenAPI 3.1 document, generated from the live routes and the pydantic models that validate.

Each view declares what it takes and answers with `@operation(...)`; the document walks Flask's URL map,
so a route that exists is documented and a documented route exists. Schemas come from the same pydantic
models the handlers use, never from a copy kept by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, JsonSchemaValue, models_json_schema

F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
Mode = JsonSchemaMode
Refs = dict[tuple[type[Any], JsonSchemaMode], JsonSchemaValue]


@dataclass(frozen=True)
class Body:
    model: type[BaseModel]
    content_types: tuple[str, ...] = ("application/json",)
    description: str = ""


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | str]
    query: type[BaseModel] | None = None
    body: Body | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def operation(
    summary: str,
    *,
    tag: str,
    responses: dict[int, type[BaseModel] | str],
    query: type[BaseModel] | None = None,
    body: Body | None = None,
    description: str = "",
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function; the view is unchanged."""

    def wrap(view: F) -> F:
        view.__openapi__ = Operation(summary, tag, responses, query, body, description)  # type: ignore[attr-defined]
        return view

    return wrap


_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-zA-Z_]+)>")
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
    503: "Unavailable (the database, or no API token on a non-loopback node)",
}


def build_document(app: Flask, *, title: str, version: str, error_model: type[BaseModel]) -> dict[str, Any]:
    wanted: set[tuple[type[BaseModel], Mode]] = {(error_model, "serialization")}
    ops: list[tuple[str, str, Operation, list[str]]] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        op = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if op is None:
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            ops.append((path, method.lower(), op, sorted(rule.arguments)))
        wanted.update((m, "serialization") for m in op.responses.values() if isinstance(m, type))
        if op.body:
            wanted.add((op.body.model, "validation"))

    refs, defs = models_json_schema(
        sorted(wanted, key=lambda p: (p[0].__name__, p[1])), ref_template=REF, by_alias=True
    )
    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, args in ops:
        paths.setdefault(path, {})[method] = _operation_doc(path, method, op, args, error_model, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }


def _operation_doc(
    path: str,
    method: str,
    op: Operation,
    args: list[str],
    error_model: type[BaseModel],
    refs: Refs,
) -> dict[str, Any]:
    def ref(model: type[BaseModel], mode: Mode = "serialization") -> Any:
        return refs[(model, mode)]

    params: list[dict[str, Any]] = [
        {"name": a, "in": "path", "required": True, "schema": {"type": "string"}} for a in args
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            prop = {k: v for k, v in prop.items() if k != "title"}
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "Response")}
        if isinstance(model, type):
            entry["content"] = {"application/json": {"schema": ref(model)}}
        elif model:
            entry["content"] = {model: {"schema": {"type": "string"}}}
        responses[str(status)] = entry
    # Every request: auth and the browser guards (web/auth.py); writes also their media type.
    for status in (400, 401, 403, 415, 503) if method != "get" else (400, 401, 403, 503):
        responses.setdefault(
            str(status),
            {"description": _STATUS_TEXT[status], "content": {"application/json": {"schema": ref(error_model)}}},
        )
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
            "required": True,
            "description": op.body.description,
            "content": {ct: {"schema": ref(op.body.model, "validation")} for ct in op.body.content_types},
        }
    return doc
