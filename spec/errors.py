"""Pydantic's errors -> short rules a user understands ("must be an integer", "must be one of HTTP, TCP").

Pydantic words its errors for programmers ("Input should be a valid dictionary or instance of Port").
Each error type that the spec models can raise is mapped here; a type not listed keeps pydantic's text.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from pydantic import ValidationError

from .fields import RULE_ERROR
from .issues import Loc

_KEY_MARK = "[key]"
_FIXED = {
    "missing": "required",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "finite_number": "must be a finite number",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def number(value: float) -> str:
    """10.0 -> "10", 0.5 -> "0.5": how a bound reads in a rule."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def pydantic_issues(exc: ValidationError) -> list[tuple[Loc, str]]:
    """Every error of a ValidationError as (location in the validated document, rule)."""
    out: list[tuple[Loc, str]] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        text = _rule(err)
        if loc and loc[-1] == _KEY_MARK:
            loc, text = loc[:-1], f"key {text}"
        out.append((loc, text))
    return out


def _rule(err: Any) -> str:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    if kind == RULE_ERROR:
        return str(err["msg"])
    if kind in _FIXED:
        return _FIXED[kind]
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {number(next(iter(ctx.values())))}"
    if kind == "string_type":
        return _string_rule(err.get("input"))
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f'must be "{choices[0]}"' if len(choices) == 1 else f"must be one of {', '.join(choices)}"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must have at least {least} items"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


def _string_rule(value: object) -> str:
    if isinstance(value, bool | int | float):
        return "must be a string; quote numbers and booleans"
    if isinstance(value, datetime.date | datetime.time):
        return "must be a string; quote dates and times"
    return "must be a string"
