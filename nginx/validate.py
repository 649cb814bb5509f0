"""Validators for every value that reaches nginx's configuration or its routing table.

nginx's configuration language has no escaping that Orchestry could rely on, and the Lua code receives some
values inside string literals, so a value is accepted only if it is harmless as written: no whitespace, no
`;{}`, no quotes, no `$` (nginx variables), no `#`, no backslash, no `..`. Each function returns the value
(normalised where that is obvious) or raises `ValueError` naming the setting.
"""

from __future__ import annotations

import ipaddress
import math
import re

APP_NAME_MAX = 63
DOMAIN_MAX = 253
PATH_MAX = 1024

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Characters that nginx or Lua would read as syntax, plus anything that is not printable ASCII.
_PATH_SAFE = re.compile(r"[A-Za-z0-9/_.,:@%+=~-]+")
_SIZE = re.compile(r"[1-9][0-9]{0,5}[km]?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SYSLOG = re.compile(r"syslog:server=(?P<addr>[0-9.]+:[0-9]+)")


def _show(value: object) -> str:
    """A short repr: a hostile value may be huge, and the message should stay readable."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(name: str, value: object, what: str) -> ValueError:
    return ValueError(f"{name}: {_show(value)} is not {what}")


def port(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(name, value, "a port number (1-65535)")
    return value


def positive_int(value: object, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise _fail(name, value, f"an integer from 1 to {maximum}")
    return value


def seconds(value: object, name: str, maximum: float = 86400.0) -> int:
    """A duration in seconds, returned as whole milliseconds (at least 1) for nginx's `ms` suffix."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(name, value, "a number of seconds")
    if not 0 < value <= maximum:
        raise _fail(name, value, f"a duration above 0 and at most {maximum:g} seconds")
    return max(1, round(value * 1000))


MAX_GENERATION = 2**53 - 1  # the Lua side holds numbers as doubles: above it two generations can look equal


def generation(value: object, name: str = "generation") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GENERATION:
        raise _fail(name, value, "an integer from 0 to 2**53 - 1")
    return value


def path(value: object, name: str) -> str:
    """An absolute file system path that is safe inside nginx's configuration and a Lua string literal."""
    text = str(value) if hasattr(value, "__fspath__") else value
    if not isinstance(text, str) or not text.startswith("/") or len(text) > PATH_MAX:
        raise _fail(name, value, f"an absolute path of at most {PATH_MAX} characters")
    if not _PATH_SAFE.fullmatch(text):
        raise _fail(name, value, "a path of letters, digits and '/_.,:@%+=~-' only (no spaces, quotes, ';{}$#')")
    if ".." in text.split("/"):
        raise _fail(name, value, "a path without '..'")
    return text


def size(value: object, name: str) -> str:
    """An nginx size: digits with an optional k or m suffix (e.g. `8m`)."""
    if not isinstance(value, str) or not _SIZE.fullmatch(value):
        raise _fail(name, value, "a size such as '512k' or '8m'")
    return value


def app_name(value: object, name: str = "app name") -> str:
    if not isinstance(value, str) or len(value) > APP_NAME_MAX or not _DNS_LABEL.fullmatch(value):
        raise _fail(name, value, "a DNS label ([a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters)")
    return value


def domain(value: object, name: str = "domain") -> str:
    """A DNS name in lower case, such as `localhost` or `apps.example.com`."""
    if not isinstance(value, str) or not 0 < len(value) <= DOMAIN_MAX:
        raise _fail(name, value, f"a DNS name of at most {DOMAIN_MAX} characters")
    labels = value.split(".")
    if not all(len(label) <= APP_NAME_MAX and _DNS_LABEL.fullmatch(label) for label in labels):
        raise _fail(name, value, "a lower-case DNS name (labels of [a-z0-9-], dot-separated)")
    return value


def ipv4(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.isascii():
        raise _fail(name, value, "an IPv4 address")
    try:
        # Strict: no leading zeros, no shorthand; the text must be the canonical form.
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail(name, value, "an IPv4 address") from None
    if str(address) != value:
        raise _fail(name, value, "an IPv4 address in dotted-decimal form")
    return value


def address(value: object, name: str = "address") -> str:
    """A replica's `IPv4:port`: the balancer's `set_current_peer` takes IP addresses, never host names."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise _fail(name, value, "an address of the form IPv4:port")
    host, _, port_text = value.partition(":")
    ipv4(host, name)
    if not port_text.isdigit() or not port_text.isascii() or port_text != str(int(port_text)):
        raise _fail(name, value, "an address of the form IPv4:port")
    port(int(port_text), name)
    return value


def user_name(value: object, name: str = "user") -> str:
    if not isinstance(value, str) or not _USER.fullmatch(value):
        raise _fail(name, value, "a user name ([a-z_][a-z0-9_-]*, at most 32 characters)")
    return value


def worker_processes(value: object, name: str = "worker_processes") -> str:
    if value == "auto":
        return "auto"
    return str(positive_int(value, name, 1024))


def access_log(value: object, name: str = "access_log") -> str:
    """`off`, an absolute file path, or `syslog:server=IPv4:port` (one UDP datagram per request)."""
    if value == "off":
        return "off"
    if isinstance(value, str) and value.startswith("syslog:"):
        match = _SYSLOG.fullmatch(value)
        if not match:
            raise _fail(name, value, "'syslog:server=IPv4:port'")
        address(match["addr"], name)
        return value
    return path(value, name)
