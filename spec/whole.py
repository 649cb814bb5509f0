"""Whole numbers written as floats (`5.0`) are integers.

JSON Schema's `integer` admits `5.0` (it is the number 5), and YAML and JSON encoders may write it so; the
strict models (no `false` -> 0, no "5" -> 5) would refuse it. `integral` is a before-validator of a model:
it turns an integral float given for an integer field (or in a list of integers) into that integer, and
leaves everything else to the field's own validation (`5.5` stays a float and is refused there).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

_INT_FIELDS: dict[type[BaseModel], frozenset[str]] = {}


def _takes_int(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes_int(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list):
        return any(_takes_int(arg) for arg in get_args(annotation))
    return annotation is int


def int_fields(model: type[BaseModel]) -> frozenset[str]:
    """The keys (names and aliases) of `model`'s integer fields."""
    if model not in _INT_FIELDS:
        _INT_FIELDS[model] = frozenset(
            key
            for name, info in model.model_fields.items()
            if _takes_int(info.annotation)
            for key in (name, info.alias or name)
        )
    return _INT_FIELDS[model]


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_whole(v) if isinstance(v, float) else v for v in value]
    return value


def integral(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    keys = int_fields(model)
    return {k: _whole(v) if k in keys else v for k, v in data.items()} if keys else data
