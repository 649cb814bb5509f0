"""Public routes (issue 13), pure: host and path matching, stripPrefix, conflicts between apps; and the
spec's validation of routes (IDNA, wildcards, normalised paths)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.nginx.edge import EdgeCert, hosts_to_certs
from orchestry.spec import load_specs
from orchestry.spec.fields import normalize_host, normalize_route_path
from orchestry.workflows.public_routes import RouteRule, edge_rules, find_conflicts, match, stripped

RULES = [
    RouteRule("web", "example.com", "/"),
    RouteRule("api", "example.com", "/api", strip_prefix=True),
    RouteRule("v2", "example.com", "/api/v2"),
    RouteRule("wild", "*.example.com", "/"),
    RouteRule("shop", "shop.example.com", "/cart"),
]


@pytest.mark.parametrize(
    ("host", "path", "app"),
    [
        ("example.com", "/", "web"),
        ("EXAMPLE.com", "/index.html", "web"),
        ("example.com.", "/x", "web"),
        ("example.com", "/api", "api"),
        ("example.com", "/api?x=1", "api"),
        ("example.com", "/api/users", "api"),
        ("example.com", "/apiary", "web"),  # a prefix is whole segments
        ("example.com", "/api/v2", "v2"),  # the longest prefix wins
        ("example.com", "/api/v2/x", "v2"),
        ("example.com", "/api/v20", "api"),
        ("a.example.com", "/", "wild"),  # a wildcard covers one label
        ("a.b.example.com", "/", None),
        ("shop.example.com", "/cart/1", "shop"),  # the exact host first ...
        ("shop.example.com", "/other", "wild"),  # ... then the wildcard
        ("other.com", "/", None),
        ("com", "/", None),
    ],
)
def test_match(host: str, path: str, app: str | None) -> None:
    found = match(RULES, host, path)
    assert (found.app if found else None) == app


@pytest.mark.parametrize(
    ("rule_path", "strip", "path", "forwarded"),
    [
        ("/api", True, "/api", "/"),
        ("/api", True, "/api?x=1", "/?x=1"),
        ("/api", True, "/api/users?id=3", "/users?id=3"),
        ("/api", False, "/api/users", "/api/users"),
        ("/", True, "/x", "/x"),
    ],
)
def test_strip_prefix(rule_path: str, strip: bool, path: str, forwarded: str) -> None:
    assert stripped(RouteRule("a", "h.test", rule_path, strip_prefix=strip), path) == forwarded


def spec(name: str, routes: list[dict[str, Any]] | None = None, default: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": name}}
    if routes is not None:
        out["routes"] = [{"path": "/", **r} for r in routes]
    if not default:
        out["defaultRoute"] = False
    return out


@pytest.mark.parametrize(
    ("new", "others", "conflicts"),
    [
        (spec("b", [{"host": "x.com"}]), {"a": spec("a", [{"host": "x.com"}])}, [("routes[0].host", "a")]),
        (spec("b", [{"host": "x.com", "path": "/v1"}]), {"a": spec("a", [{"host": "x.com"}])}, []),
        (spec("b", [{"host": "x.com"}]), {"a": spec("a", [{"host": "*.x.com"}])}, []),
        (spec("b", [{"host": "a.localhost"}]), {"a": spec("a")}, [("routes[0].host", "a")]),  # a's default
        (spec("b", [{"host": "a.localhost"}]), {"a": spec("a", default=False)}, []),
        (spec("a"), {"b": spec("b", [{"host": "a.localhost"}])}, [("defaultRoute", "b")]),
        (spec("a", [{"host": "x.com"}]), {"a": spec("a", [{"host": "x.com"}])}, []),  # itself: a new revision
        (
            spec("c", [{"host": "y.com", "path": "/p"}]),
            {"a": spec("a"), "b": spec("b", [{"host": "y.com", "path": "/p"}])},
            [("routes[0].host", "b")],
        ),
    ],
)
def test_conflicts(new: dict[str, Any], others: dict[str, Any], conflicts: list[tuple[str, str]]) -> None:
    found = find_conflicts(new["metadata"]["name"], new, others, "localhost")
    assert [(c.field, c.other_app) for c in found] == conflicts
    for c in found:
        assert c.other_app in c.message


def test_edge_rules_sort_longest_first_and_list_apps_without_default() -> None:
    rules, off = edge_rules(
        {"a": spec("a", [{"host": "x.com"}, {"host": "x.com", "path": "/long/er"}], default=False), "b": spec("b")}
    )
    assert [(r.app, r.path) for r in rules] == [("a", "/long/er"), ("a", "/")]
    assert off == ["a"]


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("*.Example.com", "*.example.com"),
        ("a-b.c", "a-b.c"),
    ],
)
def test_hosts_are_normalised(raw: str, normal: str) -> None:
    assert normalize_host(raw) == normal


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("", "hostname"),
        ("a..b", "IDNA"),
        ("-a.com", "IDNA"),
        ("a_b.com", "IDNA"),
        ("*.com", "two labels"),
        ("a.*.com", "wildcard"),
        ("*a.com", "wildcard"),
        ("10.0.0.1", "IP address"),
        ("x" * 64 + ".com", "IDNA"),
    ],
)
def test_bad_hosts_are_refused(raw: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        normalize_host(raw)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("/", "/"), ("/v1/", "/v1"), ("/a/b", "/a/b"), ("/a%20b", "/a%20b")],
)
def test_paths_are_normalised(raw: str, normal: str) -> None:
    assert normalize_route_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        ("v1", "start with /"),
        ("/a/../b", r"'\.\.'"),
        ("/a/./b", r"'\.'"),
        ("/..", r"'\.\.'"),
        ("/a//b", "empty segments"),
        ("/a?b", "no query"),
        ("/a b", "no query"),
        ("/a#b", "no query"),
    ],
)
def test_bad_paths_are_refused(raw: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        normalize_route_path(raw)


SPEC = """\
apiVersion: v1
kind: App
metadata: {{name: web}}
spec: {{image: "web:1", ports: [{{containerPort: 8080}}]}}
{extra}
"""


def test_the_spec_stores_normalised_routes() -> None:
    result = load_specs(
        SPEC.format(
            extra="routes: [{host: Bücher.Example., path: /v1/, stripPrefix: true, tls: custom}]\ndefaultRoute: false"
        ).encode(),
        "application/yaml",
    )
    assert result.ok, result.errors
    normalized = result.specs[0].normalized
    assert normalized["routes"] == [
        {
            "host": "xn--bcher-kva.example",
            "path": "/v1",
            "stripPrefix": True,
            "tls": "custom",
            "redirectHttp": False,
            "hsts": False,
        }
    ]
    assert normalized["defaultRoute"] is False


def test_a_spec_without_routes_keeps_its_content_hash() -> None:
    plain = load_specs(SPEC.format(extra="").encode(), "application/yaml").specs[0]
    assert "routes" not in plain.normalized and "defaultRoute" not in plain.normalized
    explicit = load_specs(SPEC.format(extra="routes: []\ndefaultRoute: true").encode(), "application/yaml").specs[0]
    assert explicit.content_hash == plain.content_hash


@pytest.mark.parametrize(
    ("extra", "path", "rule"),
    [
        ("routes: [{host: 'a b'}]", "routes[0].host", "hostname"),
        ("routes: [{host: a.com, path: /x/../y}]", "routes[0].path", "'..'"),
        ("routes: [{host: a.com}, {host: A.com., path: /}]", "routes[1].path", "unique"),
        ("routes: [{host: '*.a.com', tls: auto}]", "routes[0].tls", "wildcard"),
        ("routes: [{host: a.com, redirectHttp: true}]", "routes[0].redirectHttp", "tls"),
        ("routes: [{host: a.com, hsts: true}]", "routes[0].hsts", "tls"),
        ("routes: [{host: a.com, tls: maybe}]", "routes[0].tls", ""),
        ("routes: [{host: a.com, stripPrefix: 1}]", "routes[0].stripPrefix", ""),
    ],
)
def test_bad_routes_are_refused_with_their_field(extra: str, path: str, rule: str) -> None:
    result = load_specs(SPEC.format(extra=extra).encode(), "application/yaml")
    assert [e.path for e in result.errors] == [path]
    assert rule in result.errors[0].rule


def test_a_certificate_per_host_is_the_latest_to_expire() -> None:
    from datetime import UTC, datetime

    early, late = datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)
    certs = [
        EdgeCert(1, ("a.test", "b.test"), "", "", late),
        EdgeCert(2, ("a.test",), "", "", early),
        EdgeCert(3, ("*.x.test",), "", "", early),
    ]
    assert hosts_to_certs(certs) == {"*.x.test": 3, "a.test": 1, "b.test": 1}


@pytest.mark.parametrize(
    ("state", "expires_in_days", "age_seconds", "failures", "is_due"),
    [
        (None, None, 0, 0, True),  # no certificate yet
        ("pending", None, 0, 0, False),  # its job is queued
        ("valid", 60, 0, 0, False),
        ("valid", 31, 0, 0, False),
        ("valid", 29, 0, 0, True),  # within 30 days of expiry: renew
        ("valid", -1, 0, 0, True),
        ("valid", 29, 30, 1, False),  # a renewal failed 30 s ago: the same backoff (was retried every sweep)
        ("valid", 29, 61, 1, True),
        ("valid", 29, 3000, 4, False),
        ("valid", 60, 3601, 1, False),  # failures, but not yet within the renewal window
        ("failed", None, 30, 1, False),  # backoff: 60 s after one failure
        ("failed", None, 61, 1, True),
        ("failed", None, 200, 2, False),  # 300 s after two
        ("failed", None, 301, 2, True),
        ("failed", None, 3000, 9, False),  # at most an hour
        ("failed", None, 3601, 9, True),
    ],
)
def test_when_a_certificate_is_due(
    state: str | None, expires_in_days: int | None, age_seconds: int, failures: int, is_due: bool
) -> None:
    from datetime import UTC, datetime, timedelta

    from orchestry.workflows.certs import cert_due

    now = datetime(2030, 6, 1, tzinfo=UTC)
    not_after = None if expires_in_days is None else now + timedelta(days=expires_in_days)
    assert cert_due(state, not_after, now - timedelta(seconds=age_seconds), now, failures) is is_due


@pytest.mark.parametrize(
    ("last_error", "reason", "in_a_row", "after", "failures"),
    [
        (None, "dns", False, "dns", 1),  # the first failure
        ("a", "b", True, "a\nb", 2),  # failed before: counted on
        ("a\nb\nc", "d", True, "a\nb\nc\nd", 4),
        ("a\nb\nc\nd", "e", True, "b\nc\nd\ne", 4),  # four kept: the longest backoff needs no more
        ("a\nb", "c", False, "c", 1),  # not in a row (a success cleared the count): this one alone
        (None, "x" * 600, False, "x" * 500, 1),  # a CA's reason cut to 500 characters
    ],
)
def test_a_failure_recorded_and_counted(
    last_error: str | None, reason: str, in_a_row: bool, after: str, failures: int
) -> None:
    from orchestry.workflows.certs import failures_in, with_failure

    assert with_failure(last_error, reason, in_a_row) == after
    assert failures_in(after) == failures
    assert failures_in(None) == failures_in("") == 0
