"""The reconcile plan as a table: desired state and observed replicas in, starts, drains and stops out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestry.workflows.converge import (
    NO_ROUTER,
    Container,
    Desired,
    Known,
    Plan,
    Routing,
    Seen,
    Start,
    Stop,
    plan_app,
    see,
)
from orchestry.workflows.converge import leaving as leaving_addresses


def run(slot: int, h: str = "new", ready: bool = True, **kw: bool) -> Seen:
    return Seen(f"a-{slot}", slot, h, running=True, ready=ready, **kw)


def dead(slot: int, h: str = "new") -> Seen:
    return Seen(f"a-{slot}", slot, h, running=False, ready=False)


def leaving(slot: int, drained: bool, h: str = "old") -> Seen:
    return Seen(f"a-{slot}", slot, h, running=True, ready=False, draining=True, drained=drained)


def sick(slot: int, h: str = "new") -> Seen:
    return Seen(f"a-{slot}", slot, h, running=True, ready=False, unhealthy=True)


# (id, desired replicas, seen, start slots, drains, stops, waits, halts)
CASES = [
    ("nothing to nothing", 0, [], (), (), (), False, False),
    ("up 3 from nothing", 3, [], (1, 2, 3), (), (), False, False),
    ("already 3", 3, [run(1), run(2), run(3)], (), (), (), False, False),
    ("up waits until the new replicas serve", 2, [run(1), run(2, ready=False)], (), (), (), True, False),
    ("scale 3 to 5", 5, [run(1), run(2), run(3)], (4, 5), (), (), False, False),
    (
        "scale 5 to 2 drains the highest slots",
        2,
        [run(i) for i in range(1, 6)],
        (),
        ("a-5", "a-4", "a-3"),
        (),
        False,
        False,
    ),
    ("down drains everything", 0, [run(1), run(2)], (), ("a-2", "a-1"), (), False, False),
    (
        "scale-in takes a replica that is not serving before a newer one that serves",
        2,
        [run(1), run(2, ready=False), run(3)],
        (),
        ("a-2",),
        (),
        False,
        False,
    ),
    (
        "scale-in: the not-serving ones first, then the newest",
        1,
        [run(1), run(2, ready=False), run(3), run(4)],
        (),
        ("a-2", "a-4", "a-3"),
        (),
        False,
        False,
    ),
    ("a draining replica waits", 1, [run(1), leaving(2, drained=False, h="new")], (), (), (), True, False),
    ("a drained replica stops", 1, [run(1), leaving(2, drained=True, h="new")], (), (), ("a-2",), False, False),
    (
        "draining does not count as capacity",
        2,
        [run(1), leaving(2, drained=False, h="new")],
        (3,),
        (),
        (),
        False,
        False,
    ),
    (
        "a dead replica is removed at once and its slot reused",
        3,
        [run(1), dead(2), run(3)],
        (2,),
        (),
        ("a-2",),
        False,
        False,
    ),
    ("all dead", 2, [dead(1), dead(2)], (1, 2), (), ("a-1", "a-2"), False, False),
    ("gap in slots is filled first", 3, [run(1), run(3)], (2,), (), (), False, False),
    ("bad slot label removed", 1, [run(1), Seen("x", -1, "new", True, True)], (), (), ("x",), False, False),
    ("unhealthy is replaced: new slot and drain", 2, [run(1), sick(2)], (3,), ("a-2",), (), False, False),
    ("rollout starts one new", 3, [run(1, "old"), run(2, "old"), run(3, "old")], (4,), (), (), False, False),
    (
        "rollout waits for the new one",
        3,
        [run(1, "old"), run(2, "old"), run(3, "old"), run(4, ready=False)],
        (),
        (),
        (),
        True,
        False,
    ),
    (
        "rollout drains one old once ready",
        3,
        [run(1, "old"), run(2, "old"), run(3, "old"), run(4)],
        (),
        ("a-1",),
        (),
        False,
        False,
    ),
    (
        "rollout: the drained old stops, the next new starts",
        3,
        [leaving(1, drained=True), run(2, "old"), run(3, "old"), run(4)],
        (5,),
        (),
        ("a-1",),
        False,
        False,
    ),
    (
        "rollout drains one old at a time",
        3,
        [leaving(1, drained=False), run(2, "old"), run(3, "old"), run(4), run(5)],
        (),
        (),
        (),
        True,
        False,
    ),
    ("rollout next new takes the freed slot", 3, [run(2, "old"), run(3, "old"), run(4)], (1,), (), (), False, False),
    ("rollout last old drained", 3, [run(3, "old"), run(1), run(2), run(4)], (), ("a-3",), (), False, False),
    ("rollout while scaling down", 1, [run(1, "old"), run(2, "old")], (), ("a-1",), (), False, False),
    ("rollout of a stopped app just drains", 0, [run(1, "old")], (), ("a-1",), (), False, False),
    (
        "rollout under capacity starts up to one extra",
        2,
        [dead(1, "old"), run(2, "old")],
        (1, 3),
        (),
        ("a-1",),
        False,
        False,
    ),
    (
        "rollout halts on an unhealthy new replica",
        2,
        [run(1, "old"), run(2, "old"), sick(3)],
        (),
        (),
        ("a-3",),
        False,
        True,
    ),
]


def moved(slot: int, ready: bool = True) -> Seen:
    """A replica of the revision in force on a host being drained."""
    return Seen(f"a-{slot}", slot, "new", running=True, ready=ready, evicted=True)


CASES += [
    # A host's drain moves its replicas like a rollout: one extra elsewhere, ready before the one there drains.
    ("a drained host's replica gets a replacement first", 2, [run(1), moved(2)], (3,), (), (), False, False),
    ("its replacement not ready yet: wait", 2, [run(1), moved(2), run(3, ready=False)], (), (), (), True, False),
    ("its replacement ready: the evicted one drains", 2, [run(1), moved(2), run(3)], (), ("a-2",), (), False, False),
    ("two on the drained host: one at a time", 3, [run(1), moved(2), moved(3)], (4,), (), (), False, False),
    ("an evicted replica draining is awaited", 2, [run(1), run(3), leaving(2, False, "new")], (), (), (), True, False),
    ("scale-in takes the evicted first", 1, [run(1), moved(2)], (), ("a-2",), (), False, False),
    ("every replica on the drained host", 1, [moved(1)], (2,), (), (), False, False),
    # a rollout's last old replica serves until the last new one does (it was drained at once before)
    ("last old waits for the last new", 2, [run(1, ready=False), run(2, "old"), run(3)], (), (), (), True, False),
    # an unhealthy new replica while moving is replaced, not a halted rollout
    ("a sick replacement is replaced", 2, [run(1), moved(2), sick(3)], (4,), ("a-3",), (), False, False),
]


@pytest.mark.parametrize(
    ("want", "seen", "start", "drain", "stop", "waits", "halts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan(
    want: int,
    seen: list[Seen],
    start: tuple[int, ...],
    drain: tuple[str, ...],
    stop: tuple[str, ...],
    waits: bool,
    halts: bool,
) -> None:
    plan = plan_app(Desired(want, "new"), seen)
    assert tuple(s.slot for s in plan.starts) == start
    assert tuple(s.name for s in plan.drains) == drain
    assert tuple(s.name for s in plan.stops) == stop
    assert (plan.wait is not None) == waits
    assert (plan.halt is not None) == halts


def test_backing_off_keeps_the_unhealthy_replica_without_waiting_on_it() -> None:
    """While the app backs off, the failed replica stays out of rotation and the job has nothing to do."""
    plan = plan_app(Desired(2, "new", replace_unhealthy=False), [run(1), sick(2)])
    assert plan.done


def test_rollout_converges_and_never_drops_below_desired() -> None:
    """A whole rollout of 4 replicas: apply each plan (drains take a round), check capacity, stop when done."""
    seen = [run(i, "old") for i in range(1, 5)]
    for _ in range(60):
        plan = plan_app(Desired(4, "new"), seen)
        if plan.done:
            break
        assert sum(s.ready for s in seen) >= 4
        assert len(seen) <= 5
        stopped = {s.name for s in plan.stops}
        drained = {s.name for s in plan.drains}
        seen = [
            leaving(s.slot, drained=False, h=s.spec_hash)
            if s.name in drained
            else (leaving(s.slot, drained=True, h=s.spec_hash) if s.draining else s)
            for s in seen
            if s.name not in stopped
        ] + [run(s.slot) for s in plan.starts]
    assert plan.done
    assert len(seen) == 4 and all(s.spec_hash == "new" for s in seen)
    assert len({s.slot for s in seen}) == 4


def test_moving_off_a_drained_host_never_drops_below_desired() -> None:
    """Three replicas, two on a host being drained: apply each plan until done; capacity never drops."""
    seen = [run(1), moved(2), moved(3)]
    for _ in range(60):
        plan = plan_app(Desired(3, "new"), seen)
        if plan.done:
            break
        assert sum(s.ready for s in seen) >= 3
        stopped = {s.name for s in plan.stops}
        drained = {s.name for s in plan.drains}
        seen = [
            leaving(s.slot, drained=False, h=s.spec_hash)
            if s.name in drained
            else (leaving(s.slot, drained=True, h=s.spec_hash) if s.draining else s)
            for s in seen
            if s.name not in stopped
        ] + [run(s.slot) for s in plan.starts]
    assert plan.done
    assert len(seen) == 3 and not [s for s in seen if s.evicted]
    assert all(p.reason != "roll out the new revision" for p in plan.starts)


def test_done_plan() -> None:
    assert Plan().done
    assert not Plan(starts=(Start(1, "x"),)).done
    assert not Plan(stops=(Stop("a", "x"),)).done
    assert not Plan(drains=(Stop("a", "x"),)).done
    assert not Plan(wait="w").done
    assert not Plan(halt="h").done


def test_scale_in_while_backing_off_takes_the_unhealthy_replica_first() -> None:
    plan = plan_app(Desired(2, "new", replace_unhealthy=False), [run(1), sick(2), run(3)])
    assert [s.name for s in plan.drains] == ["a-2"]


# -- see: what the planner sees of each container (observed first, decided here) --------------------------

T = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
ADDR = "127.0.0.1:40001"
BOX = Container("a-1", "c1", 1, "h1", True, ADDR)


def known(health: str = "healthy", container: str = "c1", drain_ago: float | None = None) -> dict[str, Known]:
    began = None if drain_ago is None else T - timedelta(seconds=drain_ago)
    return {"a-1": Known(container, health, began)}


SERVED = Routing(frozenset({ADDR}), {})


def gone(open_requests: int | None) -> Routing:
    return Routing(frozenset(), {ADDR: open_requests})


# (id, container, known, owned, probed, routing, router, (ready, draining, drained, unhealthy))
SEE_CASES = [
    ("healthy and served", BOX, known(), True, True, SERVED, True, (True, False, False, False)),
    ("healthy, not yet in the table", BOX, known(), True, True, gone(None), True, (False, False, False, False)),
    ("no router: healthy is ready", BOX, known(), True, True, NO_ROUTER, False, (True, False, False, False)),
    (
        "another container in the slot: health unknown",
        BOX,
        known(container="c0"),
        True,
        True,
        SERVED,
        True,
        (False, False, False, False),
    ),
    (
        "no health check: running is ready",
        BOX,
        known("unknown"),
        True,
        False,
        SERVED,
        True,
        (True, False, False, False),
    ),
    ("unhealthy", BOX, known("unhealthy"), True, True, SERVED, True, (False, False, False, True)),
    ("dead", replace(BOX, running=False), known(), True, True, SERVED, True, (False, False, False, False)),
    ("draining, still in the table", BOX, known(drain_ago=60), True, True, SERVED, True, (True, True, False, False)),
    ("draining, out, requests open", BOX, known(drain_ago=1), True, True, gone(2), True, (False, True, False, False)),
    ("draining, out, requests done", BOX, known(drain_ago=1), True, True, gone(0), True, (False, True, True, False)),
    ("draining, out, drain time over", BOX, known(drain_ago=30), True, True, gone(2), True, (False, True, True, False)),
    (
        "draining, nginx count unknown",
        BOX,
        known(drain_ago=1),
        True,
        True,
        gone(None),
        True,
        (False, True, False, False),
    ),
    ("draining without a router", BOX, known(drain_ago=0), True, True, NO_ROUTER, False, (True, True, True, False)),
    ("an orphan (app gone)", BOX, {}, False, False, NO_ROUTER, True, (True, True, True, False)),
]


@pytest.mark.parametrize(
    ("container", "rows", "owned", "probed", "routing", "router", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in SEE_CASES],
)
def test_see(
    container: Container,
    rows: dict[str, Known],
    owned: bool,
    probed: bool,
    routing: Routing,
    router: bool,
    expected: tuple[bool, bool, bool, bool],
) -> None:
    [s] = see([container], rows, owned=owned, probed=probed, drain_seconds=30, routing=routing, router=router, now=T)
    assert (s.ready, s.draining, s.drained, s.unhealthy) == expected


def test_leaving_lists_only_the_draining_containers_the_database_knows() -> None:
    other = Container("a-2", "c2", 2, "h1", True, "127.0.0.1:40002")
    rows = {**known(drain_ago=1), "a-2": Known("c-old", "healthy", T)}  # a-2's drain was of an older container
    assert leaving_addresses([BOX, other], rows) == [ADDR]
