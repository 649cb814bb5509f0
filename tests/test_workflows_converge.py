"""The reconcile plan as a table: desired state and observed replicas in, starts and stops out."""

from __future__ import annotations

import pytest

from orchestry.workflows.converge import Desired, Plan, Seen, Start, Stop, plan_app


def run(slot: int, h: str = "new", ready: bool = True) -> Seen:
    return Seen(f"a-{slot}", slot, h, running=True, ready=ready)


def dead(slot: int, h: str = "new") -> Seen:
    return Seen(f"a-{slot}", slot, h, running=False, ready=False)


def starts(*slots: int) -> tuple[int, ...]:
    return slots


CASES = [
    # (id, desired replicas, seen, expected start slots, expected stop names, waits)
    ("nothing to nothing", 0, [], (), (), False),
    ("up 3 from nothing", 3, [], (1, 2, 3), (), False),
    ("already 3", 3, [run(1), run(2), run(3)], (), (), False),
    ("scale 3 to 5", 5, [run(1), run(2), run(3)], (4, 5), (), False),
    ("scale 5 to 2 stops the highest slots", 2, [run(i) for i in range(1, 6)], (), ("a-5", "a-4", "a-3"), False),
    ("down", 0, [run(1), run(2)], (), ("a-2", "a-1"), False),
    ("a dead replica is removed and its slot reused", 3, [run(1), dead(2), run(3)], (2,), ("a-2",), False),
    ("all dead", 2, [dead(1), dead(2)], (1, 2), ("a-1", "a-2"), False),
    ("gap in slots is filled first", 3, [run(1), run(3)], (2,), (), False),
    ("bad slot label removed", 1, [run(1), Seen("x", -1, "new", True, True)], (), ("x",), False),
    ("rollout starts one new", 3, [run(1, "old"), run(2, "old"), run(3, "old")], (4,), (), False),
    (
        "rollout waits for the new one",
        3,
        [run(1, "old"), run(2, "old"), run(3, "old"), run(4, ready=False)],
        (),
        (),
        True,
    ),
    ("rollout stops one old once ready", 3, [run(1, "old"), run(2, "old"), run(3, "old"), run(4)], (), ("a-1",), False),
    ("rollout next new takes the freed slot", 3, [run(2, "old"), run(3, "old"), run(4)], (1,), (), False),
    ("rollout last old stopped", 3, [run(3, "old"), run(1), run(2), run(4)], (), ("a-3",), False),
    ("rollout while scaling down", 1, [run(1, "old"), run(2, "old")], (), ("a-1",), False),
    ("rollout of a stopped app just stops", 0, [run(1, "old")], (), ("a-1",), False),
    ("rollout under capacity starts up to one extra", 2, [dead(1, "old"), run(2, "old")], (1, 3), ("a-1",), False),
]


@pytest.mark.parametrize(("want", "seen", "start", "stop", "waits"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(want: int, seen: list[Seen], start: tuple[int, ...], stop: tuple[str, ...], waits: bool) -> None:
    plan = plan_app(Desired(want, "new"), seen)
    assert tuple(s.slot for s in plan.starts) == start
    assert tuple(s.name for s in plan.stops) == stop
    assert (plan.wait is not None) == waits


def test_rollout_converges_and_never_drops_below_desired() -> None:
    """Simulate a whole rollout of 4 replicas: apply each plan, check capacity, stop when done."""
    seen = [run(i, "old") for i in range(1, 5)]
    for _ in range(50):
        plan = plan_app(Desired(4, "new"), seen)
        if plan.done:
            break
        assert sum(s.ready for s in seen) >= 4
        assert len(seen) <= 5
        names = {s.name for s in plan.stops}
        seen = [s for s in seen if s.name not in names] + [run(s.slot) for s in plan.starts]
    assert plan.done
    assert len(seen) == 4 and all(s.spec_hash == "new" for s in seen)
    assert len({s.slot for s in seen}) == 4


def test_done_plan() -> None:
    assert Plan().done
    assert not Plan(starts=(Start(1, "x"),)).done
    assert not Plan(stops=(Stop("a", "x"),)).done
    assert not Plan(wait="w").done
