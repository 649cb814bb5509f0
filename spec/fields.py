"""Constrained field types of the app spec, each refusing bad input with a rule a user understands.

Each check raises a PydanticCustomError of type `orchestry_rule` whose message is the rule itself, so
the error mapping (errors.py) passes it through unchanged. The JSON schema of each type carries the same
constraint as a pattern or bound, so the OpenAPI document says what the validator enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from . import quantities

RULE_ERROR = "orchestry_rule"
MAX_SECONDS = 86_400  # bounds keep later arithmetic (timedelta, integer columns) safe
MAX_COUNT = 10_000

DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
LABEL_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
# Orchestry's own container labels are `org.orchestry.*` (runtime.types); the others are kept reserved too.
RESERVED_LABEL_PREFIXES = ("org.orchestry.", "orchestry.", "io.orchestry.")
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
VOLUME_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
HTTP_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = (
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
IMAGE_ID = r"sha256:[a-f0-9]{64}"
# Docker reads a reference made only of hex digits (no tag, registry or digest) as an image ID prefix when no
# such repository exists: `image: "0"` started whichever local image's ID begins with 0.
BARE_HEX = r"[a-f0-9]+"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def rule(text: str) -> PydanticCustomError:
    """An error whose message is exactly `text` (braces are safe: the rule is passed as context)."""
    return PydanticCustomError(RULE_ERROR, "{rule}", {"rule": text})


def _check(fn: Callable[[Any], str | None]) -> AfterValidator:
    def run(value: Any) -> Any:
        problem = fn(value)
        if problem:
            raise rule(problem)
        return value

    return AfterValidator(run)


def _schema(**extra: Any) -> Any:
    return Field(json_schema_extra=extra)


def _matches(pattern: str, max_len: int, what: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def check(value: str) -> str | None:
        if len(value) > max_len:
            return f"must be at most {max_len} characters"
        return None if compiled.fullmatch(value) else f"must be {what}"

    return check


_DNS_WHAT = "a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"


def _label_key(value: str) -> str | None:
    if value.lower().startswith(RESERVED_LABEL_PREFIXES):
        reserved = ", ".join(f"'{p}'" for p in RESERVED_LABEL_PREFIXES)
        return f"must not start with {reserved} (reserved for Orchestry)"
    return _matches(LABEL_KEY, 63, "letters, digits and '-_./', starting and ending with a letter or digit")(value)


def _image(value: str) -> str | None:
    if len(value) > 255:
        return "must be at most 255 characters"
    if re.fullmatch(IMAGE_ID, value):
        return None
    if re.fullmatch(BARE_HEX, value) or value.startswith("sha256:"):
        return (
            "must have a repository name, or be a full image ID (a bare hex string or a short sha256: is read "
            'by Docker as an image ID prefix): write "name:tag" or "sha256:<64 hex>"'
        )
    if re.fullmatch(IMAGE_REF, value):
        return None
    return 'must be a Docker image reference such as "my-api:1.2" or "registry:5000/team/api@sha256:<hex>"'


def _absolute_path(value: str) -> str | None:
    if not value.startswith("/"):
        return "must be an absolute path"
    return "must not contain control characters" if _CONTROL.search(value) else None


def _mount_path(value: str) -> str | None:
    if problem := _absolute_path(value):
        return problem
    if value.rstrip("/") == "":
        return "must not be /"
    return "must not contain ':'" if ":" in value else None


def _http_path(value: str) -> str | None:
    if not value.startswith("/"):
        return "must start with /"
    if len(value) > 2048:
        return "must be at most 2048 characters"
    return "must not contain spaces or control characters" if _SPACE_OR_CONTROL.search(value) else None


def _no_nul(value: str) -> str | None:
    return "must not contain NUL characters" if "\x00" in value else None


def _header_value(value: str) -> str | None:
    """Visible ASCII, spaces and tabs: what every HTTP client sends as it is (a non-ASCII value would be
    encoded differently by each, or refused when the probe sends it)."""
    return None if re.fullmatch(r"[\t\x20-\x7e]*", value) else "must be printable ASCII (no CR, LF, NUL or non-ASCII)"


def _pattern(regex: str) -> str:
    return f"^{regex}$"


_DNS = _pattern(DNS_LABEL)
RESERVED_APP_NAMES = ("register",)  # `POST /api/v1/apps/register` is a route, so no app may be called that


def _app_name(value: str) -> str | None:
    if value in RESERVED_APP_NAMES:
        return f"must not be {value!r} (reserved: /api/v1/apps/{value} is an API route)"
    return _matches(DNS_LABEL, 63, _DNS_WHAT)(value)


AppName = Annotated[
    str, _check(_app_name), _schema(pattern=_DNS, maxLength=63, **{"not": {"enum": list(RESERVED_APP_NAMES)}})
]
PortName = Annotated[str, _check(_matches(DNS_LABEL, 15, _DNS_WHAT)), _schema(pattern=_DNS, maxLength=15)]
LabelKey = Annotated[str, _check(_label_key), _schema(pattern=_pattern(LABEL_KEY), maxLength=63)]
LabelValue = Annotated[
    str,
    _check(_matches(LABEL_VALUE, 63, "empty, or letters, digits and '-_.' starting and ending with a letter or digit")),
    _schema(pattern=_pattern(LABEL_VALUE), maxLength=63),
]
ImageRef = Annotated[
    str, _check(_image), _schema(pattern=f"^(?:{IMAGE_ID}|(?!{BARE_HEX}$|sha256:){IMAGE_REF})$", maxLength=255)
]
EnvName = Annotated[
    str,
    _check(_matches(ENV_NAME, 255, "letters, digits and '_', not starting with a digit")),
    _schema(pattern=_pattern(ENV_NAME), maxLength=255),
]
Text = Annotated[str, _check(_no_nul)]
AbsolutePath = Annotated[str, _check(_absolute_path), _schema(pattern="^/")]
MountPath = Annotated[str, _check(_mount_path), _schema(pattern="^/[^:]*$")]
VolumeName = Annotated[
    str,
    _check(_matches(VOLUME_NAME, 64, "letters, digits and '_.-', starting with a letter or digit")),
    _schema(pattern=_pattern(VOLUME_NAME), maxLength=64),
]
HttpPath = Annotated[str, _check(_http_path), _schema(pattern=r"^/\S*$", maxLength=2048)]
HeaderName = Annotated[
    str,
    _check(_matches(HTTP_TOKEN, 256, "an HTTP header name (a token)")),
    _schema(pattern=_pattern(HTTP_TOKEN)),
]
HeaderValue = Annotated[str, _check(_header_value), _schema(pattern="^[\t\x20-\x7e]*$")]
SECRET_NAME = r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?"
SecretName = Annotated[
    str,
    _check(
        _matches(SECRET_NAME, 253, "lowercase letters, digits and '-_.', starting and ending with a letter or digit")
    ),
    _schema(pattern=_pattern(SECRET_NAME), maxLength=253),
]

# Swarm's placement vocabulary (docker service create --constraint / --placement-pref): a node attribute, an
# operator, a value. Label keys are letters, digits and `-_.`; values have no spaces or operators.
_NODE_ATTRIBUTE = (
    r"(?:node\.(?:id|hostname|role|platform\.os|platform\.arch)|(?:node|engine)\.labels\.[A-Za-z0-9][A-Za-z0-9_.-]*)"
)
PLACEMENT_CONSTRAINT = _NODE_ATTRIBUTE + r"\s*(?:==|!=)\s*[^\s=!]+"
SPREAD_DESCRIPTOR = r"(?:node|engine)\.labels\.[A-Za-z0-9][A-Za-z0-9_.-]*"
_CONSTRAINT_WHAT = (
    "a Swarm constraint: ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, the attribute one of node.id, node.hostname, "
    "node.role, node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>"
)
PlacementConstraint = Annotated[
    str,
    _check(_matches(PLACEMENT_CONSTRAINT, 255, _CONSTRAINT_WHAT)),
    _schema(pattern=_pattern(PLACEMENT_CONSTRAINT), maxLength=255),
]
SpreadDescriptor = Annotated[
    str,
    _check(_matches(SPREAD_DESCRIPTOR, 255, "node.labels.<key> or engine.labels.<key> (the label to spread over)")),
    _schema(pattern=_pattern(SPREAD_DESCRIPTOR), maxLength=255),
]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
StatusCode = Annotated[int, Field(ge=100, le=599)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
PositiveSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
Percent = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]
Target = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _quantity(parse: Callable[[object], int]) -> BeforeValidator:
    def run(value: object) -> int:
        try:
            return parse(value)
        except quantities.QuantityError as exc:
            raise rule(str(exc)) from None

    return BeforeValidator(run)


CpuMillicores = Annotated[
    int,
    _quantity(quantities.parse_cpu),
    PlainSerializer(quantities.format_cpu, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?|\.\d+)m?$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": 'Cores ("0.5", 2) or millicores ("500m"); at most 64 cores.',
        }
    ),
]
MemoryBytes = Annotated[
    int,
    _quantity(quantities.parse_memory),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$"},
                {"type": "integer", "minimum": quantities.MIN_MEMORY_BYTES},
            ],
            "description": 'Bytes, or a quantity with Ki/Mi/Gi/Ti (binary) or K/M/G/T (decimal): "512Mi".',
        }
    ),
]


# -- routes (issue 13): hostnames and path prefixes, normalised as they are validated ------------------------

_HOST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
ROUTE_PATH_CHARS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def normalize_host(value: str) -> str:
    """A hostname as a route or certificate names it -> its ASCII (IDNA) lowercase form; `*.` allowed as the
    whole first label. Raises ValueError with the rule."""
    import idna  # httpx's dependency, listed in pyproject

    if not isinstance(value, str) or not value:
        raise ValueError("must be a hostname such as api.example.com")
    host = value.strip().rstrip(".")
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        raise ValueError("a wildcard must be the whole first label: *.example.com")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"must be a valid (IDNA) hostname: {exc}") from None
    labels = ascii_host.split(".")
    if any(not _HOST_LABEL.fullmatch(label) or len(label) > 63 for label in labels):
        raise ValueError("must be a hostname: labels of letters, digits and '-', at most 63 characters each")
    if labels[-1].isdigit():
        raise ValueError("must be a hostname, not an IP address")
    if wildcard and len(labels) < 2:
        raise ValueError("a wildcard needs at least two labels after it: *.example.com")
    full = ("*." if wildcard else "") + ascii_host
    if len(full) > 253:
        raise ValueError("must be at most 253 characters")
    return full


def normalize_route_path(value: str) -> str:
    """A route's path prefix -> normalised: starts with /, no trailing / (but "/"), no empty, '.' or '..'
    segments, no query or fragment. Raises ValueError with the rule."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must start with /")
    if len(value) > 1024:
        raise ValueError("must be at most 1024 characters")
    if not ROUTE_PATH_CHARS.fullmatch(value):
        raise ValueError("must be a URL path: letters, digits and -._~!$&'()*+,;=:@%/ (no query, fragment or spaces)")
    segments = value.strip("/").split("/")
    if any(s in (".", "..") for s in segments):
        raise ValueError("must not contain '.' or '..' segments")
    if value != "/" and "" in segments:
        raise ValueError("must not contain empty segments (//)")
    return "/" + "/".join(s for s in segments if s)


def _normalizer(fn: Callable[[str], str]) -> AfterValidator:
    def run(value: str) -> str:
        try:
            return fn(value)
        except ValueError as exc:
            raise rule(str(exc)) from None

    return AfterValidator(run)


Hostname = Annotated[str, _normalizer(normalize_host), _schema(maxLength=253)]
RoutePath = Annotated[str, _normalizer(normalize_route_path), _schema(pattern="^/", maxLength=1024)]
