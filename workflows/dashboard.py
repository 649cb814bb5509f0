"""The dashboard's decisions (pure): who may post a form, how figures and times read, how a chart is thinned.

Access. The dashboard keeps the API token in an HttpOnly, SameSite=Strict cookie, so a page's script never
sees it and another site's page never sends it. Every write also carries a CSRF token derived (HMAC) from a
random per-browser nonce kept in a second HttpOnly cookie: a page on another site cannot read it, so cannot
forge the form. A write a browser marks as cross-site (`Sec-Fetch-Site`, `Origin`) is refused before that, as
the API's writes are (workflows/access.py). Forms are form-encoded, which the API refuses: the dashboard's
own paths are checked here instead, never the API's.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestry.workflows.access import WRITE_METHODS, Refusal, cross_site_refusal

CSRF_LABEL = b"orchestry-dashboard-csrf-v1"
RANGES = {"15m": 900, "1h": 3600, "24h": 86400}  # chart ranges offered, seconds
DEFAULT_RANGE = "15m"
CHART_POINTS = 180  # at most this many points per chart: a 24 h range is 43,200 samples at 2 s


def csrf_token(nonce: str) -> str:
    """The CSRF token of a browser whose nonce cookie holds `nonce`."""
    return hmac.new(nonce.encode(), CSRF_LABEL, hashlib.sha256).hexdigest()


def form_refusal(
    method: str,
    *,
    scheme: str,
    host: str,
    origin: str | None,
    fetch_site: str | None,
    nonce: str | None,
    sent: str | None,
) -> Refusal | None:
    """Why a dashboard write is refused (None: it is not): another site's page, or no valid CSRF token."""
    if method.upper() not in WRITE_METHODS:
        return None
    cross = cross_site_refusal(
        scheme=scheme, host=host, origin=origin, fetch_site=fetch_site, rule="must come from the dashboard's own pages"
    )
    if cross is not None:
        return cross
    if not nonce:
        return Refusal(403, "csrf", "csrf", "no CSRF cookie: reload the page and submit again")
    if not sent or not hmac.compare_digest(sent, csrf_token(nonce)):
        return Refusal(403, "csrf", "csrf", "missing or wrong CSRF token: reload the page and submit again")
    return None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only (no other site, no scheme-relative `//host`)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


# -- how numbers and times read -------------------------------------------------------------------------------


def number(value: float | None, unit: str = "", digits: int = 1) -> str:
    """`12.3 req/s`; `-` for a figure nobody measured (never shown as a zero)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if value and abs(value) < 1:
        text = f"{value:.2g}"  # small but measured: 0.02%, never rounded to a zero
    elif abs(value) >= 100 or (digits == 0 and abs(value) >= 10):
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.{max(digits, 1)}f}"
    return f"{text} {unit}".strip() if unit and unit != "%" else f"{text}{unit}"


def millis(value: float | None) -> str:
    """A latency: `38 ms`, `1.25 s`."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:,.2f} s"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def duration(seconds: float | None) -> str:
    """`850 ms`, `12 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    whole = int(seconds)
    for size, unit, sub_size, sub_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{whole // size} {unit}" + (f" {rest} {sub_unit}" if rest else "")
    return f"{whole} s"  # pragma: no cover - every whole >= 60 matched above


def ago(then: datetime | None, now: datetime) -> str:
    """`just now`, `12 s ago`, `3 min ago`, `in 2 s` (a time ahead of `now`)."""
    if then is None:
        return "never"
    delta = (now - then).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


# -- charts -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the epoch
    values: tuple[float | None, ...]


def thin(samples: Sequence[Sample], start: float, end: float, points: int = CHART_POINTS) -> list[Sample]:
    """At most `points` samples over [start, end]: the mean of each equal slice of time (a slice without a
    sample is left out, so a gap stays a gap); as given when they are fewer."""
    inside = [s for s in samples if start <= s.at <= end]
    if len(inside) <= points or end <= start:
        return inside
    width = (end - start) / points
    buckets: dict[int, list[Sample]] = {}
    for s in inside:
        buckets.setdefault(min(points - 1, int((s.at - start) / width)), []).append(s)
    out = []
    for index in sorted(buckets):
        group = buckets[index]
        columns = zip(*(s.values for s in group), strict=True)
        means = tuple(_mean([v for v in column if v is not None]) for column in columns)
        out.append(Sample(sum(s.at for s in group) / len(group), means))
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
