"""Who may call the API, decided from a request's headers (pure): the API's guards against browsers.

Two holes are closed here (issue 11, "Access"):

- An API bound to a non-loopback address never runs open. `serve` refuses such an address while no token
  exists, but tokens can be revoked later: such a node then refuses every request (503 `no_api_token`)
  until a token exists again, and `token revoke` refuses to remove the last one while such a node runs.
- A browser page must not drive the API. Without a token a browser could send "simple" cross-site requests
  (no preflight): `text/plain`, form-encoded or multipart bodies, or an empty POST to `/up`. Writes accept
  only the documented media types, and a write that a browser marks as coming from another site
  (`Origin`, `Sec-Fetch-Site`) is refused. In open mode (no token) the `Host` must also name a loopback
  address, so a DNS-rebinding page (whose own origin then resolves to 127.0.0.1) cannot read or write.
  Programs such as the CLI (httpx, curl) send no `Origin` and no `Sec-Fetch-*` header and are unaffected.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a write body may be: JSON everywhere, YAML for app specs. None of them is a "simple" content type,
# so a browser sends them cross-site only after a preflight, which this API never grants (no CORS).
BODY_TYPES = ("application/json", "application/yaml", "application/x-yaml")
SAFE_FETCH_SITES = frozenset({"same-origin", "none"})  # `none`: typed in the address bar, a bookmark
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    field: str  # the header (or <body>) that broke the rule
    rule: str

    @property
    def detail(self) -> str:
        return f"{self.field}: {self.rule}"


def is_loopback(host: str) -> bool:
    """Is this bind address or host name loopback only? (`0.0.0.0`, `::` and any other name are not.)"""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(scheme: str, hostport: str) -> tuple[str, str, int] | None:
    """scheme, host, port of `scheme://hostport` with the default port filled in; None when malformed."""
    try:
        parts = urlsplit(f"{scheme.lower()}://{hostport}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS.get(parts.scheme, 0)


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Does an `Origin` header name the API itself (`scheme` and `Host` of the request)?"""
    given_scheme, sep, rest = origin.strip().partition("://")
    if not sep or "/" in rest:
        return False
    theirs, ours = _origin(given_scheme, rest), _origin(scheme, host)
    return theirs is not None and theirs == ours


def host_name(host: str) -> str:
    """The name part of a `Host` header (no port, no brackets)."""
    parts = _origin("http", host)
    return parts[1] if parts else ""


def no_token_refusal(public: bool, host: str) -> Refusal | None:
    """While no token exists: a node bound to a non-loopback address answers nothing; a loopback node only
    requests addressed to a loopback name (against DNS rebinding)."""
    if public:
        return Refusal(
            503,
            "no_api_token",
            "Authorization",
            "this node listens on a non-loopback address and no API token exists: it refuses every request "
            "until one is created (`orchestry token create NAME --role operator`)",
        )
    if not is_loopback(host_name(host)):
        return Refusal(
            403,
            "forbidden_host",
            "Host",
            f"must name a loopback address (localhost, 127.0.0.1, [::1]) while no API token exists, not {host!r}",
        )
    return None


def cross_site_refusal(
    *, scheme: str, host: str, origin: str | None, fetch_site: str | None, rule: str
) -> Refusal | None:
    """A write a browser marks as another site's (`Sec-Fetch-Site`, then `Origin`), refused saying `rule`
    (the API's writes and the dashboard's forms: workflows/dashboard.py)."""
    if fetch_site is not None and fetch_site.strip().lower() not in SAFE_FETCH_SITES:
        return Refusal(403, "cross_site", "Sec-Fetch-Site", f"{rule}, not {fetch_site!r}")
    if origin is not None and not same_origin(origin, scheme, host):
        return Refusal(403, "cross_site", "Origin", f"{rule}, not {origin!r}")
    return None


def write_refusal(
    method: str,
    *,
    scheme: str,
    host: str,
    origin: str | None,
    fetch_site: str | None,
    media_type: str,
    has_body: bool,
) -> Refusal | None:
    """Why a write is refused (None: it is not): another site's page, or a body of a type a browser can
    send cross-site without asking."""
    if method.upper() not in WRITE_METHODS:
        return None
    cross = cross_site_refusal(
        scheme=scheme,
        host=host,
        origin=origin,
        fetch_site=fetch_site,
        rule="writes must come from the API's own origin",
    )
    if cross is not None:
        return cross
    media = media_type.split(";", 1)[0].strip().lower()
    if media and media not in BODY_TYPES:
        return Refusal(415, "unsupported_media_type", "Content-Type", f"must be one of {', '.join(BODY_TYPES)}")
    if has_body and not media:
        return Refusal(415, "unsupported_media_type", "Content-Type", f"a body needs one of {', '.join(BODY_TYPES)}")
    return None
