"""Private registries, the pure part: which registry an image comes from, what a valid server name is, and
what a failed pull means to the user.

- The registry of an image follows Docker's own rule (docker/distribution's reference parsing, the SDK's
  `auth.split_repo_name`): the first path component is a registry host only when it holds a `.` or a `:` or
  is `localhost`; otherwise the image is on Docker Hub (`docker.io`). Credentials are looked up by that host.
- Pull errors arrive as the engine's text (it relays the registry's). A missing repository or tag and refused
  credentials are permanent: retrying cannot help, so the job fails at once with a message that says which,
  instead of retrying into a storm. The markers are the engine's and the registry API's error codes
  (MANIFEST_UNKNOWN, NAME_UNKNOWN, UNAUTHORIZED, DENIED) as the engine words them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
MAX_SERVER = 255  # a DNS name (253) and a port fit; the column holds this much
MAX_USERNAME = 255
MAX_DETAIL = 300  # of an unclassified engine error, in the job's message
MAX_PASSWORD = 8192  # registry tokens (a cloud provider's) run to a few KB
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[0-9]{1,5}")

# For the API's schema (JSON Schema, no lookarounds): what check_server accepts, less bracketed IPv6 addresses
# (which it accepts too but a regular expression cannot tell valid from not).
_SCHEMA_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SCHEMA_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
SERVER_PATTERN = rf"^{_SCHEMA_LABEL}(?:\.{_SCHEMA_LABEL})*(?::{_SCHEMA_PORT})?$"
USERNAME_PATTERN = r"^[^:\x00-\x1f\x7f]+$"
PASSWORD_PATTERN = r"^[^\x00-\x1f\x7f]+$"

NOT_FOUND = "not_found"
UNAUTHORIZED = "unauthorized"
OTHER = "other"
_NOT_FOUND_MARKERS = ("manifest unknown", "name unknown", "not found", "repository does not exist", "no such image")
_UNAUTHORIZED_MARKERS = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied",
    "incorrect username or password",
)


class InvalidServer(ValueError):
    """A registry server name that is not `host[:port]`; the message says which rule it breaks."""


def registry_of(image: str) -> str:
    """The registry host (with its port) that `image` is pulled from, lowercased; `docker.io` for Docker Hub."""
    first, slash, _rest = image.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        return DOCKER_HUB
    host = first.lower()
    return DOCKER_HUB if host in ("index.docker.io", "registry-1.docker.io") else host


def check_server(server: str) -> str:
    """`host[:port]` as Docker names a registry (no scheme, no path), lowercased; raises InvalidServer."""
    if not server:
        raise InvalidServer("must not be empty")
    if len(server) > MAX_SERVER:
        raise InvalidServer(f"must be at most {MAX_SERVER} characters")
    if "://" in server:
        raise InvalidServer("host[:port] only, without a scheme (no https://)")
    if "/" in server:
        raise InvalidServer("host[:port] only, without a path")
    if server.startswith("["):  # [IPv6]:port
        end = server.find("]")
        host, rest = server[1:end], server[end + 1 :]
        if end < 0 or not _ipv6(host) or (rest and not rest.startswith(":")):
            raise InvalidServer("not a bracketed IPv6 address ([::1]:5000)")
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = server.partition(":")
        port = port_text if colon else None
        if not _HOST.fullmatch(host):
            raise InvalidServer("host must be a DNS name or an IPv4 address (letters, digits, '-' and '.')")
    if port is not None and (not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535):
        raise InvalidServer("port must be a number from 1 to 65535")
    normal = server.lower()
    return DOCKER_HUB if normal in ("index.docker.io", "registry-1.docker.io") else normal


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def check_username(username: str) -> str | None:
    """Why `username` is refused, or None."""
    if not username:
        return "must not be empty"
    if len(username) > MAX_USERNAME:
        return f"must be at most {MAX_USERNAME} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in username) or ":" in username:
        return "must not contain ':' or control characters (basic auth cannot carry them)"
    return None


def check_password(password: str) -> str | None:
    """Why `password` is refused, or None."""
    if not password:
        return "must not be empty"
    if len(password) > MAX_PASSWORD:
        return f"must be at most {MAX_PASSWORD} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        return "must not contain control characters (a trailing newline from a file? strip it)"
    return None


@dataclass(frozen=True)
class PullFailure:
    kind: str  # not_found | unauthorized | other
    message: str


def pull_failure(image: str, error: str, *, authenticated: bool) -> PullFailure:
    """What the engine's pull error means, in a message the user can act on."""
    server = registry_of(image)
    text = error.lower()
    if any(marker in text for marker in _UNAUTHORIZED_MARKERS) and "repository does not exist" not in text:
        if authenticated:
            return PullFailure(UNAUTHORIZED, f"unauthorized: wrong credentials for {server} (pulling {image})")
        return PullFailure(
            UNAUTHORIZED,
            f"unauthorized: {server} needs credentials (pulling {image}); `orchestry registry login {server}`",
        )
    if any(marker in text for marker in _NOT_FOUND_MARKERS):
        if not authenticated and "may require" in text:  # Docker Hub says the same for private repositories
            return PullFailure(
                NOT_FOUND,
                f"image not found: {image} (or {server} needs credentials: `orchestry registry login {server}`)",
            )
        return PullFailure(NOT_FOUND, f"image not found: {image} ({server} has no such repository or tag)")
    detail = " ".join(error.split())
    detail = detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"
    return PullFailure(OTHER, f"image {image} is not available locally and could not be pulled: {detail}")


def pull_summary(layers: int, downloaded: int, size: int, seconds: float) -> str:
    """`3 layers (2 downloaded, 1.2 MB) in 0.8 s`: a pull step's one line."""
    if layers == 0:  # the engine had every layer (another tag of the same image): nothing was fetched
        return f"nothing to download (its layers were on the host) in {seconds:.1f} s"
    fetched = f"{downloaded} downloaded, {_size(size)}" if downloaded else "none downloaded"
    return f"{layers} layer{'s' if layers != 1 else ''} ({fetched}) in {seconds:.1f} s"


PROGRESS_SECONDS = 1.0  # at most one progress step per pull this often: each step is a write of the job's row


def progress_due(last_at: float, now: float, changed: bool, every: float = PROGRESS_SECONDS) -> bool:
    """Whether a pull's progress is worth a step now: it moved since the last step, written `every` s ago."""
    return changed and now - last_at >= every


def pull_progress(layers: int, layers_done: int, bytes_done: int, bytes_total: int) -> str:
    """`2/5 layers, 12.3 MB of 40.1 MB`: a progress step's one line (sizes as far as the engine announced)."""
    text = f"{layers_done}/{layers} layer{'s' if layers != 1 else ''}"
    if bytes_total:
        text += f", {_size(bytes_done)} of {_size(bytes_total)}"
    return text


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


# Checking credentials at login (probe/registry.py asks; these decide what to ask and what the answer means).
# Docker's registry API: GET /v2/ answers 401 with a `WWW-Authenticate` challenge; `Basic` takes the
# credentials on /v2/ itself, `Bearer realm=...,service=...` at a token server (Docker Hub, cloud registries),
# which answers 200 with a token for good credentials and 401/403 for bad ones.
HUB_REGISTRY = "registry-1.docker.io"  # where docker.io's API is served


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lowercased
    params: dict[str, str]


def registry_urls(server: str) -> tuple[str, ...]:
    """The /v2/ URLs to try, in order, as the engine does: HTTPS; a loopback registry also over plain HTTP
    (Docker treats 127.0.0.0/8 and ::1 as insecure registries by itself)."""
    host = HUB_REGISTRY if server == DOCKER_HUB else server
    urls = [f"https://{host}/v2/"]
    name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
    if name == "localhost" or _loopback(name):
        urls.append(f"http://{host}/v2/")
    return tuple(urls)


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str | None) -> Challenge | None:
    """`Bearer realm="https://auth.example.com/token",service="registry.example.com"` as a Challenge; None
    for a missing header or a scheme other than Basic or Bearer."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return Challenge(scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()})


def token_request(challenge: Challenge, username: str) -> tuple[str, dict[str, str]] | None:
    """The token server's URL and query for a Bearer challenge (as `docker login` asks: no scope, the account
    named); None when the challenge names no usable realm (http or https only)."""
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("https://", "http://")):
        return None
    query = {"account": username, "client_id": "orchestry"}
    if challenge.params.get("service"):
        query["service"] = challenge.params["service"]
    return realm, query
