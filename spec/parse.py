"""Body -> documents: YAML 1.2 (one or several documents) or JSON, with guards for hostile input.

ruamel.yaml's safe loader reads YAML 1.2, so `no`, `22:22` and `on` stay strings. Aliases are built as
shared references: a "billion laughs" body is small in memory but explodes when walked, so every
document is walked once here with a node budget before anything else touches it.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from .issues import SpecParseError, SpecTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
ACCEPTED_TYPES = JSON_TYPES + YAML_TYPES
# The work of one request is bounded by these (and the body size limit): nodes are counted while the YAML
# is composed, so a 100,001-item list is refused after 10,000 items instead of after being built whole.
MAX_NODES = 10_000
MAX_DOCUMENTS = 100
MAX_DEPTH = 64


@dataclass(frozen=True)
class Document:
    """One parsed document and its own text (what `spec?raw=true` returns for the app it registers)."""

    value: object
    text: str


def parse_documents(body: bytes | str, content_type: str | None) -> list[object]:
    """Parse a request body into its non-empty documents; raise SpecParseError or UnsupportedMediaType."""
    return [doc.value for doc in parse_documents_with_text(body, content_type)]


def parse_documents_with_text(body: bytes | str, content_type: str | None) -> list[Document]:
    """Parse a request body into its non-empty documents, each with its own text (a YAML document's slice
    of the body, comments included; a JSON list's items re-serialised; a single JSON object as sent)."""
    is_json = _is_json(content_type)
    text = _decode(body)
    if not text.strip():
        raise SpecParseError("no document")
    docs = _load_json(text) if is_json else _load_yaml(text)
    docs = [doc for doc in docs if doc.value is not None]
    if not docs:
        raise SpecParseError("no document")
    if len(docs) > MAX_DOCUMENTS:
        raise SpecTooLarge(f"too many documents: {len(docs)} (at most {MAX_DOCUMENTS} in one request)")
    _check_size([doc.value for doc in docs])
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


class _BoundedComposer(Composer):
    """ruamel's composer with a node budget and a document count, recording where each document ends.

    Each node (an alias each time it is used) costs one unit of the budget, so the work done before a refusal
    is bounded by MAX_NODES, whatever the body's size.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0
        self.ends: list[int] = []

    def compose_document(self) -> Any:
        if len(self.ends) >= MAX_DOCUMENTS:
            raise SpecTooLarge(f"too many documents: more than {MAX_DOCUMENTS} in one request")
        node = super().compose_document()
        self.ends.append(self.last_end)
        return node

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SpecTooLarge(f"document too large: more than {MAX_NODES} nodes in one request")
        return super().compose_node(parent, index)

    @property
    def last_end(self) -> int:
        # The DOCUMENT-END event just dropped by compose_document: implicit ends sit where the next
        # document (or the stream's end) begins, so consecutive slices cover the body.
        event = self.parser.last_event if hasattr(self.parser, "last_event") else None
        mark = getattr(event, "end_mark", None)
        return int(getattr(mark, "index", -1))


def _load_yaml(text: str) -> list[Document]:
    _check_flow_depth(text)
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _BoundedComposer
    try:
        values = list(yaml.load_all(text))
        return _with_text(text, values, yaml.composer.ends)
    except SpecParseError:
        raise
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


def _with_text(text: str, values: list[Any], ends: list[int]) -> list[Document]:
    """Each document's slice: from the end of the previous one (its comments and `---` line) to its end."""
    if len(ends) != len(values) or any(end < 0 for end in ends):
        return [Document(value, text) for value in values]  # cannot happen with ruamel's parser; never lose text
    starts = [0, *ends][: len(ends)]
    return [Document(value, text[start:end]) for value, start, end in zip(values, starts, ends, strict=True)]


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


def _load_json(text: str) -> list[Document]:
    try:
        doc = _json_decoder().decode(text)
    except json.JSONDecodeError as exc:
        raise SpecParseError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise SpecParseError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN, Infinity, an integer beyond Python's 4300-digit limit
        raise SpecParseError(f"invalid JSON: {_first_clause(exc)}") from None
    if not isinstance(doc, list):
        return [Document(doc, text)]
    if len(doc) > MAX_DOCUMENTS:
        raise SpecTooLarge(f"too many documents: {len(doc)} (at most {MAX_DOCUMENTS} in one request)")
    return [Document(item, json.dumps(item, indent=2, ensure_ascii=False) + "\n") for item in doc]


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
            raise SpecTooLarge(f"document too large: more than {MAX_NODES} nodes (aliases count each use)")
        if depth > MAX_DEPTH:
            raise SpecParseError(f"document nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for pair in node.items() for child in pair)
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in node)
