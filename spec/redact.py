"""What a viewer sees of a spec: every literal env value replaced by "<redacted>" (pure).

Secrets never appear in a spec (only their names, under `valueFrom`); literal values may still be
sensitive, so a token without the operator role reads them redacted, in the normalised spec and in the
raw document alike.
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

from ruamel.yaml import YAML

from .parse import parse_documents

REDACTED = "<redacted>"


def redact_env(doc: Any) -> Any:
    """A copy of one spec document with `spec.environment[*].value` (or `spec.env`) redacted."""
    out = copy.deepcopy(doc)
    spec = out.get("spec") if isinstance(out, dict) else None
    if not isinstance(spec, dict):
        return out
    for key in ("environment", "env"):
        items = spec.get(key)
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and "value" in item:
                item["value"] = REDACTED
    return out


def redact_raw(raw: str, raw_format: str) -> str:
    """The raw document with env values redacted, re-serialised (comments and layout are not kept)."""
    try:
        docs = [redact_env(doc) for doc in parse_documents(raw, "application/json" if raw_format == "json" else None)]
    except ValueError:
        return ""
    if raw_format == "json":
        return "\n".join(json.dumps(doc, indent=2, ensure_ascii=False) for doc in docs) + "\n"
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump_all(docs, buffer)
    return buffer.getvalue()
