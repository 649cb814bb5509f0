"""Public routes (pure): which app answers a host and path, and which claims two apps may not share.

Every http app answers at `<app>.<domain>` (and `/<app>/` on any other host) unless its spec says
`defaultRoute: false`; `routes:` add host + path-prefix rules. nginx's Lua router applies the same rules
(nginx/lua/orchestry_router.lua `match`); `match` here is their reference, tested by table.

- A host matches exactly, else through a wildcard `*.example.com` covering exactly one more label
  (`a.example.com`, not `a.b.example.com`, nor `example.com`), as a certificate's wildcard does.
- Among the rules of the matching host, the longest path prefix wins; a prefix matches a path equal to it
  or followed by `/` or `?` (`/v1` matches `/v1`, `/v1/x`, `/v1?q`, not `/v10`).
- Two apps conflict when they claim the same host and path; an explicit route on `<other>.<domain>` also
  conflicts with that app's default route when the path is `/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RouteRule:
    app: str
    host: str  # normalised: lowercase ASCII (IDNA), `*.` for a wildcard
    path: str = "/"  # normalised: no trailing / but "/"
    strip_prefix: bool = False
    tls: str = "off"  # off | auto | custom
    redirect_http: bool = False
    hsts: bool = False
    default: bool = False  # the app's `<app>.<domain>` route

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "host": self.host,
            "path": self.path,
            "strip": self.strip_prefix,
            "tls": self.tls,
            "redirect": self.redirect_http,
            "hsts": self.hsts,
        }


@dataclass(frozen=True)
class Conflict:
    index: int  # the route's index in the registering app's `routes` (-1: its default route)
    host: str
    path: str
    other_app: str

    @property
    def field(self) -> str:
        return f"routes[{self.index}].host" if self.index >= 0 else "defaultRoute"

    @property
    def message(self) -> str:
        return f"{self.host}{self.path} is already routed to app {self.other_app}"


def rules_of(app: str, spec: Mapping[str, Any] | None) -> list[RouteRule]:
    """The explicit routes of a normalised spec (stored revision or just validated)."""
    if not spec:
        return []
    rules = []
    for item in spec.get("routes") or ():
        rules.append(
            RouteRule(
                app=app,
                host=str(item["host"]),
                path=str(item.get("path", "/")),
                strip_prefix=bool(item.get("stripPrefix", False)),
                tls=str(item.get("tls", "off")),
                redirect_http=bool(item.get("redirectHttp", False)),
                hsts=bool(item.get("hsts", False)),
            )
        )
    return rules


def has_default_route(spec: Mapping[str, Any] | None) -> bool:
    return bool(spec) and (spec or {}).get("defaultRoute", True) is not False


def claims(app: str, spec: Mapping[str, Any] | None, domain: str) -> list[tuple[int, str, str]]:
    """(index, host, path) of every host+path the app claims; index -1 is its default route."""
    out = [(i, r.host, r.path) for i, r in enumerate(rules_of(app, spec))]
    if has_default_route(spec):
        out.append((-1, f"{app}.{domain}".lower(), "/"))
    return out


def find_conflicts(
    app: str, spec: Mapping[str, Any], others: Mapping[str, Mapping[str, Any] | None], domain: str
) -> list[Conflict]:
    """Claims of `app` (its new spec) that another app (`others`: name -> current spec) already holds."""
    held: dict[tuple[str, str], str] = {}
    for name in sorted(others):
        if name == app:
            continue
        for _, host, path in claims(name, others[name], domain):
            held.setdefault((host, path), name)
    found = []
    for index, host, path in claims(app, spec, domain):
        other = held.get((host, path))
        if other is not None:
            found.append(Conflict(index, host, path, other))
    return found


def _path_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    if not path.startswith(prefix):
        return False
    rest = path[len(prefix) :]
    return rest == "" or rest[0] in "/?"


def host_candidates(host: str) -> list[str]:
    """The keys a request's host is looked up by: itself, then the wildcard one label up."""
    host = host.lower().rstrip(".")
    first, dot, parent = host.partition(".")
    return [host, f"*.{parent}"] if dot and parent and first else [host]


def match(rules: Iterable[RouteRule], host: str, path: str) -> RouteRule | None:
    """The rule serving `host` + `path` (`path` as the client sent it, with its query): the exact host's
    rules first, then the wildcard's; among them the longest matching prefix."""
    by_host: dict[str, list[RouteRule]] = {}
    for rule in rules:
        by_host.setdefault(rule.host, []).append(rule)
    for key in host_candidates(host):
        found = [r for r in by_host.get(key, ()) if _path_matches(r.path, path)]
        if found:
            return max(found, key=lambda r: len(r.path))
    return None


def stripped(rule: RouteRule, path: str) -> str:
    """The path the replica sees: with `stripPrefix`, the rest after the prefix (at least `/`)."""
    if not rule.strip_prefix or rule.path == "/":
        return path
    rest = path[len(rule.path) :]
    if rest == "" or rest.startswith("?"):
        return "/" + rest
    return rest


def edge_rules(specs: Mapping[str, Mapping[str, Any] | None]) -> tuple[list[RouteRule], list[str]]:
    """Every app's explicit routes (sorted: host, longest path first) and the apps without a default route."""
    rules = [r for name in sorted(specs) for r in rules_of(name, specs[name])]
    rules.sort(key=lambda r: (r.host, -len(r.path), r.path))
    off = sorted(name for name, spec in specs.items() if spec and not has_default_route(spec))
    return rules, off


def tls_hosts(rules: Sequence[RouteRule], mode: str) -> list[str]:
    """The hosts whose routes ask for `tls: mode` (auto: certificates to obtain)."""
    return sorted({r.host for r in rules if r.tls == mode})
