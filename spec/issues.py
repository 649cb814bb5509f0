"""Field issues and their paths: what a user reads when a spec is refused or has unknown fields.

Paths are written as the user wrote the document (`spec.ports[0].containerPort`), so every module that
reports a problem builds a location tuple and formats it here, in one way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

Loc = tuple[str | int, ...]

DOCUMENT = "<document>"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_MAX_KEY_SHOWN = 64


class SpecParseError(ValueError):
    """The body is not well-formed YAML or JSON (or holds no document); the message says where."""


class SpecTooLarge(SpecParseError):
    """The body holds more documents or nodes than one request may (a bound on the work of one request)."""


class UnsupportedMediaType(ValueError):
    """The body's content type is neither JSON nor YAML."""

    def __init__(self, content_type: str, accepted: tuple[str, ...]) -> None:
        self.content_type = content_type
        self.accepted = accepted
        super().__init__(f"unsupported content type {content_type!r}; send one of {', '.join(accepted)}")


@dataclass(frozen=True)
class FieldIssue:
    """One problem of one document: where (`path`) and which rule was broken (`rule`)."""

    path: str
    rule: str
    document: int = 0

    @property
    def message(self) -> str:
        return f"{self.path}: {self.rule}"


def format_path(loc: Loc) -> str:
    """`("spec", "ports", 0, "containerPort")` -> `spec.ports[0].containerPort`; keys with dots are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part) and len(part) <= _MAX_KEY_SHOWN:
            out += f".{part}" if out else part
        else:
            text = part if isinstance(part, str) else repr(part)
            if len(text) > _MAX_KEY_SHOWN:
                text = text[:_MAX_KEY_SHOWN] + "…"
            out += f"[{json.dumps(text)}]"
    return out or DOCUMENT
