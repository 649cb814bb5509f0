"""Raw document -> the document the models validate, with unknown fields found by their paths.

Before pydantic sees a document:
- `spec.env` is folded into `spec.environment` and `spec.healthCheck` moved to the root, remembering
  both moves so that every issue is reported at the path the user wrote;
- keys the format does not know are dropped and reported (pydantic would drop them silently), and so are
  snake_case spellings, which the models accept only from Python code;
- `key: null` is read as "not given" for sections, lists, maps and optional fields (YAML writes an empty
  value as null); a null scalar that cannot be null (`protocol: null`) is refused;
- strings with NUL or lone surrogates are refused: PostgreSQL and UTF-8 encoders cannot store them.
Nothing is mutated: the walk builds new dicts and lists.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from .issues import Loc
from .model import AppSpec

Shape = type[BaseModel] | tuple[type[BaseModel]] | None  # a model, a list of a model (1-tuple), a leaf
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass
class Prepared:
    """The document to validate, problems found on the way (locations as validated), and `remap`."""

    doc: dict[str, Any]
    errors: list[tuple[Loc, str]] = field(default_factory=list)
    unknown: list[Loc] = field(default_factory=list)
    env_folded: bool = False
    health_moved: bool = False

    def remap(self, loc: Loc) -> Loc:
        """A location in the validated document -> where the user wrote it."""
        if self.env_folded and loc[:2] == ("spec", "environment"):
            return ("spec", "env", *loc[2:])
        if self.health_moved and loc[:1] == ("healthCheck",):
            return ("spec", "healthCheck", *loc[1:])
        return loc


def prepare(raw: dict[Any, Any]) -> Prepared:
    """Fold aliases, drop nulls and unknown keys, check text; `raw` must be a mapping."""
    out = Prepared(doc={})
    folded = _fold(raw, out)
    out.doc = _walk(folded, AppSpec, (), out)
    _default_env_values(out.doc)
    return out


def _fold(raw: dict[Any, Any], out: Prepared) -> dict[Any, Any]:
    doc = dict(raw)
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return doc
    spec = doc["spec"] = dict(spec)
    env, health = spec.pop("env", None), spec.pop("healthCheck", None)
    if env is not None:
        if spec.get("environment") is not None:
            out.errors.append((("spec", "env"), "give either env or environment, not both"))
        else:
            spec["environment"], out.env_folded = env, True
    if health is not None:
        if doc.get("healthCheck") is not None:
            out.errors.append((("spec", "healthCheck"), "give the health check here or at the root, not both"))
        else:
            doc["healthCheck"], out.health_moved = health, True
    return doc


def _walk(value: Any, shape: Shape, loc: Loc, out: Prepared) -> Any:
    if isinstance(shape, type) and isinstance(value, dict):
        known = _known_fields(shape)
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or key not in known:
                out.unknown.append((*loc, key))
            elif item is not None:
                kept[key] = _walk(item, known[key], (*loc, key), out)
            elif not _null_is_absent(shape, key):
                out.errors.append(((*loc, key), NULL_RULE))
        return kept
    if isinstance(shape, tuple) and isinstance(value, list):
        return [_walk(item, shape[0], (*loc, i), out) for i, item in enumerate(value)]
    _check_text(value, loc, out)
    return value


def _check_text(value: Any, loc: Loc, out: Prepared) -> None:
    """Leaves are scalars, lists of strings (command) or string maps (labels): one level is enough."""
    if isinstance(value, str):
        texts: list[tuple[Loc, Any]] = [(loc, value)]
    elif isinstance(value, list):
        texts = [((*loc, i), item) for i, item in enumerate(value)]
    elif isinstance(value, dict):
        texts = [((*loc, key), text) for key, item in value.items() for text in (key, item)]
    else:
        return
    for where, text in texts:
        if not isinstance(text, str):
            continue
        if "\x00" in text:
            out.errors.append((where, "must not contain NUL characters"))
        elif _SURROGATE.search(text):
            out.errors.append((where, "must be valid Unicode text"))


def _default_env_values(doc: dict[str, Any]) -> None:
    """`{name: X}` means an empty value; an item with `source` or `key` is left for the rules to judge."""
    spec = doc.get("spec")
    items = spec.get("environment") if isinstance(spec, dict) else None
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and not {"value", "source", "key", "valueFrom"} & item.keys():
            item["value"] = ""


_KNOWN: dict[type[BaseModel], dict[str, Shape]] = {}


NULL_RULE = "must not be null (leave it out for its default)"
_NULLABLE: dict[type[BaseModel], frozenset[str]] = {}


def _null_is_absent(model: type[BaseModel], key: str) -> bool:
    """`key: null` reads as "not given" for a section, a list or a map (YAML writes an empty one as null)
    and for a field that may be null; a scalar that may not (`protocol: null`) is refused, as the
    OpenAPI document says."""
    if model not in _NULLABLE:
        _NULLABLE[model] = frozenset(
            info.alias or name
            for name, info in model.model_fields.items()
            if info.is_required() or _null_ok(info.annotation)  # a required one: "required" says it best
        )
    return key in _NULLABLE[model]


def _null_ok(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return type(None) in get_args(annotation)
    return origin in (list, dict) or (isinstance(annotation, type) and issubclass(annotation, BaseModel))


def _known_fields(model: type[BaseModel]) -> dict[str, Shape]:
    """The keys a user may write in `model` (its aliases) and the shape of each value."""
    if model not in _KNOWN:
        _KNOWN[model] = {info.alias or name: _shape(info.annotation) for name, info in model.model_fields.items()}
    return _KNOWN[model]


def _shape(annotation: Any) -> Shape:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _shape(inner[0]) if len(inner) == 1 else None
    if origin is list:
        item = _shape(get_args(annotation)[0])
        return (item,) if isinstance(item, type) else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def order_key(loc: Loc) -> tuple[int, ...]:
    """Sort key putting issues in the order of the format's fields (unknown keys last, stable otherwise)."""
    shape: Shape = AppSpec
    key: list[int] = []
    for part in loc:
        if isinstance(shape, type):
            known = _known_fields(shape)
            names = list(known)
            key.append(names.index(part) if part in known else len(names))
            shape = known.get(part) if isinstance(part, str) else None
        elif isinstance(shape, tuple) and isinstance(part, int):
            key.append(part)
            shape = shape[0]
        else:
            key.append(0)
    return tuple(key)
