"""Body -> documents: YAML 1.2 (one or several documents) or JSON, with guards for hostile input.

ruamel.yaml's safe loader reads YAML 1.2, so `no`, `22:22` and `on` stay strings. Aliases are built as
shared references: a "billion laughs" body is small in memory but explodes when walked, so every
document is walked once here with a node budget before anything else touches it.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from .issues import SpecParseError, UnsupportedMediaType

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
ACCEPTED_TYPES = JSON_TYPES + YAML_TYPES
MAX_NODES = 100_000
MAX_DEPTH = 64


def parse_documents(body: bytes | str, content_type: str | None) -> list[object]:
    """Parse a request body into its non-empty documents; raise SpecParseError or UnsupportedMediaType."""
    is_json = _is_json(content_type)
    text = _decode(body)
    if not text.strip():
        raise SpecParseError("no document")
    docs = _load_json(text) if is_json else _load_yaml(text)
    docs = [doc for doc in docs if doc is not None]
    if not docs:
        raise SpecParseError("no document")
    _check_size(docs)
    return docs


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return True
    if media in YAML_TYPES or not media:
        return False
    raise UnsupportedMediaType(media, ACCEPTED_TYPES)


def _decode(body: bytes | str) -> str:
    if isinstance(body, str):
        return body.removeprefix("\ufeff")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecParseError(f"body is not valid UTF-8 (byte {exc.start})") from None


def _load_yaml(text: str) -> list[Any]:
    _check_flow_depth(text)
    yaml = YAML(typ="safe", pure=True)
    try:
        return list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        raise SpecParseError(_yaml_message(exc)) from None
    except ReaderError as exc:
        raise SpecParseError(f"invalid YAML at character {exc.position + 1}: {exc.reason}") from None
    except YAMLError as exc:
        raise SpecParseError(f"invalid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise SpecParseError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer beyond Python's 4300-digit limit, a date like 2024-13-45
        raise SpecParseError(f"invalid YAML: {_first_clause(exc)}") from None
    except TypeError:  # ruamel checks some complex keys for duplicates before refusing them
        raise SpecParseError("invalid YAML: a mapping or list used as a key") from None


def _check_flow_depth(text: str) -> None:
    """Refuse deep `[[[...` early: ruamel's scanner is quadratic in flow depth (1000 levels take a second).

    Brackets inside quotes and comments are skipped; one in a plain scalar may count, which only matters
    for a document that has more than MAX_DEPTH of them.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth, quote, comment, previous = 0, "", False, "\n"
    for char in text:
        if comment:
            comment = char != "\n"
        elif quote:
            quote = "" if char == quote else quote  # an escaped quote only ends a string early: harmless
        elif char in "'\"":
            quote = char
        elif char == "#" and previous in " \t\n":
            comment = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecParseError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char


def _yaml_message(exc: MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = exc.problem or exc.context or "malformed document"
    return f"invalid YAML{where}: {what}"


def _load_json(text: str) -> list[Any]:
    try:
        doc = _json_decoder().decode(text)
    except json.JSONDecodeError as exc:
        raise SpecParseError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise SpecParseError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN, Infinity, an integer beyond Python's 4300-digit limit
        raise SpecParseError(f"invalid JSON: {_first_clause(exc)}") from None
    return doc if isinstance(doc, list) else [doc]


class _DuplicateKey(ValueError):
    pass


def _json_decoder() -> json.JSONDecoder:
    """A decoder that refuses duplicate keys and NaN/Infinity, naming the object of a duplicate.

    The pure-Python scanner is used because only it calls `parse_object`, the one place that knows where an
    object starts; spec bodies are small, so its speed does not matter.
    """
    decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)

    def parse_object(s_and_end: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        try:
            return json.decoder.JSONObject(s_and_end, *args, **kwargs)  # type: ignore[attr-defined]
        except _DuplicateKey as exc:
            text, start = s_and_end
            raise json.JSONDecodeError(f"{exc} in the object that starts here", text, start - 1) from None

    decoder.parse_object = parse_object  # type: ignore[attr-defined]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


def _first_clause(exc: Exception) -> str:
    return str(exc).split(";", 1)[0]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {json.dumps(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_size(docs: list[Any]) -> None:
    """Walk every node once (aliases counted each time they are used) within a budget and a depth cap."""
    budget = MAX_NODES
    stack: list[tuple[Any, int]] = [(doc, 1) for doc in docs]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpecParseError(f"document too large: more than {MAX_NODES} nodes (aliases count each use)")
        if depth > MAX_DEPTH:
            raise SpecParseError(f"document nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in node)
