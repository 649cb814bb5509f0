"""The app spec format: parse YAML/JSON bodies, validate every field, normalise and hash.

Pure code (no Flask, SQLAlchemy or Docker): the API, the CLI and the jobs share one definition of a valid
spec. Entry points: `load_specs` for a request body, `validate_document` for one parsed document.
"""

from .issues import FieldIssue, SpecParseError, SpecTooLarge, UnsupportedMediaType
from .model import (
    AppSpec,
    EnvVar,
    Header,
    HealthCheck,
    Metadata,
    Port,
    Resources,
    Scaling,
    Termination,
    Volume,
    Workload,
)
from .parse import ACCEPTED_TYPES, parse_documents
from .validate import LoadedSpec, LoadResult, content_hash, load_specs, validate_document

__all__ = [
    "ACCEPTED_TYPES",
    "AppSpec",
    "EnvVar",
    "FieldIssue",
    "Header",
    "HealthCheck",
    "LoadResult",
    "LoadedSpec",
    "Metadata",
    "Port",
    "Resources",
    "Scaling",
    "SpecParseError",
    "SpecTooLarge",
    "Termination",
    "UnsupportedMediaType",
    "Volume",
    "Workload",
    "content_hash",
    "load_specs",
    "parse_documents",
    "validate_document",
]
