"""Rates and p95 from two readings of nginx's traffic counters (pure; the live counters are tested in
test_nginx_live.py)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.nginx.manager import NginxUnavailable
from orchestry.nginx.traffic import AppCounters, AppTraffic, Counters, TrafficMeter, combine, percentile, traffic

BOUNDS = (10.0, 50.0, 100.0)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ((0, 0, 0, 0), 0.95, None),  # no request
        ((10, 0, 0, 0), 0.95, 9.5),  # inside the first bucket, from 0
        ((0, 10, 0, 0), 0.5, 30.0),  # halfway through 10..50
        ((50, 50, 0, 0), 0.95, 46.0),  # rank 95 of 100: 45 of 50 into 10..50
        ((0, 0, 0, 5), 0.95, 100.0),  # all slower than the last bound: that bound
        ((1, 0, 0, 0), 0.95, 9.5),
        ((95, 0, 5, 0), 0.95, 10.0),  # exactly the 95th falls at the end of the first bucket
        ((0, 0, 20, 0), 0.0, 50.0),  # the 0-quantile: the bucket's lower edge
    ],
)
def test_percentile(counts: tuple[int, ...], q: float, expected: float | None) -> None:
    assert percentile(BOUNDS, counts, q) == (None if expected is None else pytest.approx(expected))


def reading(at: float, started: float | None = 1.0, **apps: AppCounters) -> Counters:
    return Counters(at=at, started=started, bounds=BOUNDS, apps=apps)


def app(
    requests: int,
    errors: int = 0,
    active: int = 0,
    buckets: tuple[int, ...] = (0, 0, 0, 0),
    replicas: dict[str, int] | None = None,
) -> AppCounters:
    return AppCounters(requests, errors, active, buckets, replicas or {})


CASES: list[tuple[str, Counters | None, Counters, dict[str, dict[str, Any]]]] = [
    ("no previous reading: no rates", None, reading(10, web=app(5)), {}),
    ("same instant: no rates", reading(10, web=app(5)), reading(10, web=app(9)), {}),
    (
        "requests over two seconds",
        reading(10, web=app(100, buckets=(100, 0, 0, 0))),
        reading(12, web=app(300, buckets=(100, 200, 0, 0))),
        {"web": {"rps": 100.0, "requests": 200, "p95_ms": 48.0, "error_rate": 0.0}},
    ),
    (
        "errors are a share of the interval's requests",
        reading(0, web=app(10, errors=1)),
        reading(1, web=app(20, errors=6)),
        {"web": {"rps": 10.0, "error_rate": 0.5}},
    ),
    (
        "an idle interval: zero rate, no p95",
        reading(0, web=app(10, buckets=(10, 0, 0, 0))),
        reading(5, web=app(10, buckets=(10, 0, 0, 0), active=0)),
        {"web": {"rps": 0.0, "p95_ms": None, "error_rate": 0.0}},
    ),
    (
        "active connections are the current count, not a difference",
        reading(0, web=app(0, active=7)),
        reading(1, web=app(0, active=3)),
        {"web": {"active_connections": 3}},
    ),
    (
        "an app that appeared counts from zero",
        reading(0),
        reading(2, api=app(8, buckets=(8, 0, 0, 0))),
        {"api": {"rps": 4.0, "requests": 8}},
    ),
    (
        "nginx restarted (started changed): counts since the restart",
        reading(0, started=1.0, web=app(1000)),
        reading(2, started=5.0, web=app(30)),
        {"web": {"rps": 15.0, "requests": 30}},
    ),
    (
        "a counter that went down without a restart marker: counted from zero",
        reading(0, web=app(1000)),
        reading(1, web=app(30)),
        {"web": {"requests": 30}},
    ),
    (
        "replicas: each address's own rate",
        reading(0, web=app(10, replicas={"127.0.0.1:1": 4, "127.0.0.1:2": 6})),
        reading(2, web=app(30, replicas={"127.0.0.1:1": 14, "127.0.0.1:2": 16, "127.0.0.1:3": 0})),
        {"web": {"replicas": {"127.0.0.1:1": 5.0, "127.0.0.1:2": 5.0, "127.0.0.1:3": 0.0}}},
    ),
    (
        "more errors than requests (counted at another instant) never exceed a rate of 1",
        reading(0, web=app(10, errors=0)),
        reading(1, web=app(12, errors=5)),
        {"web": {"error_rate": 1.0}},
    ),
]


@pytest.mark.parametrize(("why", "previous", "current", "expected"), CASES, ids=[c[0] for c in CASES])
def test_traffic(why: str, previous: Counters | None, current: Counters, expected: dict[str, dict[str, Any]]) -> None:
    result = traffic(previous, current)
    assert result.keys() == expected.keys()
    for name, fields in expected.items():
        for key, value in fields.items():
            got = getattr(result[name], key)
            assert got == (pytest.approx(value) if isinstance(value, float) else value), (name, key)


def test_counters_from_json_drop_what_is_malformed() -> None:
    body = {
        "bounds": [10, 50, "x"],
        "started": 3.5,
        "apps": {
            "web": {"requests": 5, "errors": -1, "active": True, "buckets": [1, 2, "z"], "replicas": {"a:1": 5}},
            "bad": "not an object",
        },
    }
    counters = Counters.from_json(body, at=1.0)
    assert counters.bounds == (10.0, 50.0) and counters.started == 3.5
    assert counters.apps == {"web": AppCounters(5, 0, 0, (1, 2, 0), {"a:1": 5})}
    assert Counters.from_json({}, at=0).apps == {}


class Source:
    def __init__(self, *bodies: dict[str, Any] | Exception) -> None:
        self.bodies = list(bodies)

    def traffic_counters(self) -> dict[str, Any]:
        body = self.bodies.pop(0)
        if isinstance(body, Exception):
            raise body
        return body


def test_the_meter_keeps_its_last_good_reading_across_a_failure() -> None:
    times = iter([0.0, 2.0, 4.0])
    body = {"bounds": [10], "started": 1, "apps": {"web": {"requests": 10, "buckets": [10, 0]}}}
    later = {"bounds": [10], "started": 1, "apps": {"web": {"requests": 50, "buckets": [50, 0]}}}
    meter = TrafficMeter(Source(body, NginxUnavailable("down"), later), clock=lambda: next(times))
    assert meter() == {}
    assert meter() == {}  # nginx did not answer: no figures (not zeros)
    result = meter()
    assert result["web"].rps == pytest.approx(40 / 2)  # from the first reading to the third (at 0 s and 2 s)


def seen(rps: float, requests: int, error_rate: float, histogram: tuple[int, ...], **replicas: float) -> AppTraffic:
    return AppTraffic(
        rps, None, 1, error_rate, requests, {k.replace("_", ":"): v for k, v in replicas.items()}, histogram, BOUNDS
    )


def test_several_nginx_combine_into_one_figure_per_app() -> None:
    a = {"web": seen(10, 20, 0.5, (20, 0, 0, 0), r_1=10), "api": seen(1, 2, 0, (2, 0, 0, 0))}
    b = {"web": seen(30, 60, 0.0, (0, 40, 20, 0), r_1=5, r_2=25)}
    both = combine([a, b])
    web = both["web"]
    assert (web.rps, web.requests, web.active_connections) == (40, 80, 2)
    assert web.error_rate == pytest.approx(10 / 80)  # over all requests, not a mean of the rates
    assert web.replicas == {"r:1": 15, "r:2": 25}
    assert web.histogram == (20, 40, 20, 0) and web.p95_ms == pytest.approx(percentile(BOUNDS, (20, 40, 20, 0), 0.95))
    assert both["api"] == a["api"]  # seen by one nginx only: as it was
    assert combine([]) == {} and combine([{}, b]) == b


def test_the_meter_adds_the_other_nodes_reports() -> None:
    local = {"bounds": [10], "started": 1, "apps": {"web": {"requests": 10, "buckets": [10, 0]}}}
    local2 = {"bounds": [10], "started": 1, "apps": {"web": {"requests": 30, "buckets": [30, 0]}}}
    peer = {"bounds": [10], "started": 7, "apps": {"web": {"requests": 100, "buckets": [100, 0]}}}
    peer2 = {"bounds": [10], "started": 7, "apps": {"web": {"requests": 160, "buckets": [160, 0]}}}
    reports = iter([{"n2": (1000.0, peer)}, {"n2": (1003.0, peer2)}, {"n2": (1003.0, peer2)}])
    times = iter([0.0, 2.0, 4.0])
    meter = TrafficMeter(Source(local, local2, local2), clock=lambda: next(times), peers=lambda: next(reports))
    assert meter() == {}
    web = meter()["web"]
    assert web.requests == 20 + 60 and web.rps == pytest.approx(20 / 2 + 60 / 3)  # each nginx on its own clock
    # The peer's report did not change since: its traffic is not counted again (nor as zero).
    assert meter()["web"].requests == 0
