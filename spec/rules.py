"""Rules across fields: they run on the prepared document after field validation, not inside pydantic.

A pydantic model validator runs only when every field of its model is valid, so a bad `windowSeconds`
would hide `minReplicas > maxReplicas`. Here each rule runs whenever the fields it compares are valid
(no error at, under or above their locations), so one response lists every problem of a document.
Values not written take the models' defaults; a rule broken by a default names the field the user wrote.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .errors import number
from .fields import normalize_host, normalize_route_path
from .issues import Loc
from .model import HealthCheck, Scaling

DEFAULT_MAX_REPLICAS = Scaling.model_fields["max_replicas"].default
_ABSENT = object()


@dataclass
class RuleCheck:
    """Issues found across fields, and the maxReplicas default once clamped to the configured cap."""

    doc: dict[str, Any]
    bad: set[Loc]
    issues: list[tuple[Loc, str]] = field(default_factory=list)
    max_replicas_default: int | None = None
    timeout_default: float | None = None  # periodSeconds given alone below timeoutSeconds' default: this instead
    notes: list[tuple[Loc, str]] = field(default_factory=list)  # warnings about values filled in

    def ok(self, loc: Loc) -> bool:
        return not any(b[: len(loc)] == loc or loc[: len(b)] == b for b in self.bad)

    def get(self, loc: Loc, default: Any = _ABSENT) -> Any:
        """The value at `loc` (or `default` when not written); _ABSENT when it cannot be trusted."""
        if not self.ok(loc):
            return _ABSENT
        node: Any = self.doc
        for part in loc:
            found = isinstance(node, dict) and part in node
            if found or (isinstance(node, list) and isinstance(part, int) and part < len(node)):
                node = node[part]
            else:
                return default
        return node

    def fail(self, loc: Loc, rule: str) -> None:
        self.issues.append((loc, rule))


def check_rules(doc: dict[str, Any], bad: set[Loc], max_replicas: int) -> RuleCheck:
    """Run every cross-field rule; `bad` holds the locations already refused."""
    check = RuleCheck(doc, bad)
    _ports(check)
    _environment(check)
    _volumes(check)
    _health_check(check)
    _scaling(check, max_replicas)
    _routes(check)
    return check


def _items(check: RuleCheck, loc: Loc) -> list[Any]:
    value: Any = check.doc
    for part in loc:
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, list) else []


def _unique(check: RuleCheck, loc: Loc, key: str, canonical: Callable[[Any], Any] = lambda v: v) -> None:
    seen: set[Any] = set()
    for i, item in enumerate(_items(check, loc)):
        value = check.get((*loc, i, key))
        if value is _ABSENT or not isinstance(item, dict) or key not in item:
            continue
        if canonical(value) in seen:
            check.fail((*loc, i, key), f"must be unique ({value} appears more than once)")
        seen.add(canonical(value))


def _ports(check: RuleCheck) -> None:
    loc: Loc = ("spec", "ports")
    kind, ports = check.get(("spec", "type"), "http"), _items(check, loc)
    if kind == "worker" and ports:
        check.fail(loc, "a worker app has no ports")
    if kind == "http" and check.ok(loc) and not any(p.get("protocol", "HTTP") == "HTTP" for p in ports):
        check.fail(loc, "an http app needs at least one HTTP port")
    _unique(check, loc, "containerPort")
    _unique(check, loc, "name")


def _environment(check: RuleCheck) -> None:
    loc: Loc = ("spec", "environment")
    _unique(check, loc, "name")
    for i, item in enumerate(_items(check, loc)):
        if not isinstance(item, dict):
            continue
        if "source" in item and "value" in item:
            check.fail((*loc, i, "value"), "must not be given with source (Orchestry fills it in)")
        if "valueFrom" in item and ("value" in item or "source" in item):
            check.fail((*loc, i, "valueFrom"), "must not be given with value or source (one source per variable)")
        if "key" in item and "source" not in item:
            check.fail((*loc, i, "key"), "requires source: sdk")
        if "source" in item and "key" not in item:
            check.fail((*loc, i, "key"), "required with source: sdk")


def _volumes(check: RuleCheck) -> None:
    loc: Loc = ("spec", "volumes")
    _unique(check, loc, "name")
    _unique(check, loc, "mountPath", posixpath.normpath)


def _health_check(check: RuleCheck) -> None:
    loc: Loc = ("healthCheck",)
    hc = check.doc.get("healthCheck", {})
    if not isinstance(hc, dict):
        return
    method, body = check.get((*loc, "method"), "GET"), check.get((*loc, "body"), "")
    if isinstance(body, str) and body and method not in ("POST", _ABSENT):
        check.fail((*loc, "body"), "is only sent with method: POST")
    period, timeout = check.get((*loc, "periodSeconds")), check.get((*loc, "timeoutSeconds"))
    default_timeout = HealthCheck.model_fields["timeout_seconds"].default
    if timeout is _ABSENT and _numbers((period,)) and period < default_timeout:
        # Kubernetes users write `periodSeconds: 2` alone (their timeout defaults to 1 s): the timeout then
        # defaults to the period, so that a probe ends before the next is due, instead of refusing the spec.
        check.timeout_default = period
        check.notes.append(
            (
                (*loc, "timeoutSeconds"),
                f"not given: defaults to periodSeconds ({number(period)}) instead of {number(default_timeout)}",
            )
        )
    else:
        _ordered(check, HealthCheck, (*loc, "timeoutSeconds"), (*loc, "periodSeconds"), strict=False, blame_low=True)
    # A health check left at its defaults is no health check (as when absent, and as the normalised form
    # of a worker stores it); one that sets anything needs a port to probe.
    defaults = _defaults(HealthCheck)
    customised = any(value != defaults.get(key) for key, value in hc.items())
    kind, ports = check.get(("spec", "type"), "http"), check.get(("spec", "ports"), [])
    if "port" not in hc and customised and kind == "worker" and ports == []:
        check.fail((*loc, "port"), "required when the app has no ports")


def _scaling(check: RuleCheck, cap: int) -> None:
    loc: Loc = ("scaling",)
    scaling = check.doc.get("scaling", {})
    if not isinstance(scaling, dict):
        return
    top = check.get((*loc, "maxReplicas"))
    if isinstance(top, int) and top > cap:
        check.fail((*loc, "maxReplicas"), f"must be <= {cap} (the configured maximum)")
    elif "maxReplicas" not in scaling and cap < DEFAULT_MAX_REPLICAS:
        check.max_replicas_default = cap
    _ordered(
        check,
        Scaling,
        (*loc, "minReplicas"),
        (*loc, "maxReplicas"),
        strict=False,
        blame_low=False,
        high_default=check.max_replicas_default,
    )
    _ordered(
        check,
        Scaling,
        (*loc, "scaleInThresholdPct"),
        (*loc, "scaleOutThresholdPct"),
        strict=True,
        blame_low=True,
    )


def _routes(check: RuleCheck) -> None:
    """Each host+path once per app; TLS settings that need TLS; no wildcard through ACME (HTTP-01 cannot
    validate one: upload a wildcard certificate with `tls: custom`)."""
    loc: Loc = ("routes",)
    items = _items(check, loc)
    if items and check.get(("spec", "type"), "http") == "worker":
        check.fail(loc, "a worker app is not routed (no routes)")
    seen: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        host, path = check.get((*loc, i, "host")), check.get((*loc, i, "path"), "/")
        tls = check.get((*loc, i, "tls"), "off")
        if isinstance(host, str) and isinstance(path, str):
            try:
                key = (normalize_host(host), normalize_route_path(path))
            except ValueError:
                key = None
            if key is not None:
                if key in seen:
                    check.fail((*loc, i, "path"), f"must be unique per host ({key[0]}{key[1]} appears more than once)")
                seen.add(key)
            if tls == "auto" and host.startswith("*."):
                check.fail((*loc, i, "tls"), "auto (ACME HTTP-01) cannot cover a wildcard host: use tls: custom")
        for flag in ("redirectHttp", "hsts"):
            if check.get((*loc, i, flag), False) is True and tls == "off":
                check.fail((*loc, i, flag), "needs tls: auto or custom")


def _ordered(
    check: RuleCheck,
    model: type[BaseModel],
    low: Loc,
    high: Loc,
    *,
    strict: bool,
    blame_low: bool,
    high_default: float | None = None,
) -> None:
    """low < high (strict) or low <= high. The error goes to the field the user wrote; when both were
    written, to `low` if `blame_low`, else to `high`."""
    defaults = _defaults(model)
    lo = check.get(low, defaults[str(low[-1])])
    hi = check.get(high, high_default if high_default is not None else defaults[str(high[-1])])
    if not _numbers((lo, hi)) or (lo < hi if strict else lo <= hi):
        return
    lo_written, hi_written = _written(check, low), _written(check, high)
    if not (lo_written or hi_written):
        return
    if lo_written and (blame_low or not hi_written):
        shown = number(hi) + ("" if hi_written else ", the default")
        check.fail(low, f"must be {'<' if strict else '<='} {high[-1]} ({shown})")
    else:
        shown = number(lo) + ("" if lo_written else ", the default")
        check.fail(high, f"must be {'>' if strict else '>='} {low[-1]} ({shown})")


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Default value of each field of `model`, by the name users write."""
    return {
        info.alias or name: info.get_default(call_default_factory=True) for name, info in model.model_fields.items()
    }


def _numbers(values: Iterable[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _written(check: RuleCheck, loc: Loc) -> bool:
    return check.get(loc) is not _ABSENT
