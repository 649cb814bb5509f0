"""The pure day-two decisions: which revision a rollback restores, spec diffs, what a change replaces."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.workflows.converge import Desired, desired_of
from orchestry.workflows.rollout import (
    ABSENT,
    Change,
    ReplicaRef,
    RevisionRef,
    RollbackChoice,
    change_plan,
    desired_hash,
    diff_specs,
    on_failure,
    restore_after_failure,
    rollback_choice,
)

A, B, C = "sha256:a", "sha256:b", "sha256:c"
HISTORY = [RevisionRef(1, A), RevisionRef(2, B), RevisionRef(3, C)]


@pytest.mark.parametrize(
    ("case", "revisions", "current", "to", "expected"),
    [
        ("default: the previous revision", HISTORY, 3, None, RollbackChoice(2)),
        ("an earlier one by number", HISTORY, 3, 1, RollbackChoice(1)),
        ("a later one (after a rollback) too", HISTORY, 1, 3, RollbackChoice(3)),
        (
            "not stored",
            HISTORY,
            3,
            7,
            RollbackChoice(None, "revision 7 does not exist (revisions: 1, 2, 3)"),
        ),
        (
            "the current one",
            HISTORY,
            3,
            3,
            RollbackChoice(None, "revision 3 is the spec in force (revision 3); nothing to roll back"),
        ),
        (
            "the same spec as the current one",
            [*HISTORY, RevisionRef(4, B, restored_from=2)],
            4,
            2,
            RollbackChoice(None, "revision 2 is the spec in force (revision 4); nothing to roll back"),
        ),
        (
            "default skips revisions with the current spec (4 restored 2: back to 3, not to 2 again)",
            [*HISTORY, RevisionRef(4, B, restored_from=2)],
            4,
            None,
            RollbackChoice(3),
        ),
        (
            "default: nothing earlier",
            [RevisionRef(1, A)],
            1,
            None,
            RollbackChoice(None, "no earlier revision with another spec than revision 1"),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_rollback_choice(
    case: str, revisions: list[RevisionRef], current: int, to: int | None, expected: RollbackChoice
) -> None:
    assert rollback_choice(revisions, current, to) == expected, case


@pytest.mark.parametrize(
    ("old", "current", "expected"),
    [
        ([1, 1], 2, 1),
        ([], 2, None),
        ([2, 2], 2, None),  # a restart: the old replicas are of the same revision, nothing to go back to
        ([1, 3, 3], 4, 3),
        ([1, 3], 4, 3),  # a tie: the newest
    ],
)
def test_restore_after_failure(old: list[int], current: int, expected: int | None) -> None:
    assert restore_after_failure(old, current) == expected


def test_desired_hash_is_the_content_hash_until_a_restart() -> None:
    assert desired_hash(A, 0) == A
    assert desired_hash(A, 2) == A + "+r2" != desired_hash(A, 3)


@pytest.mark.parametrize(
    ("status", "replicas", "content_hash", "restarts", "expected"),
    [
        ("running", 3, A, 0, Desired(3, A)),
        ("failed", 3, A, 0, Desired(3, A)),  # a failed rollout keeps its replicas running
        ("running", 2, A, 1, Desired(2, A + "+r1")),
        ("stopped", 3, A, 1, Desired(0, A + "+r1")),
        ("registered", 0, A, 0, Desired(0, A)),
        ("deleting", 2, A, 0, Desired(0, A)),
        ("running", 2, "", 1, Desired(2, "")),  # no revision in force: no hash to carry
    ],
)
def test_desired_of_an_app_row(status: str, replicas: int, content_hash: str, restarts: int, expected: Desired) -> None:
    """One reading of the app's row for the converge job's target and the reconcile sweep's drift check."""
    assert desired_of(status, replicas, content_hash, restarts) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, "halt"), ({}, "halt"), ({"rollout": {"onFailure": "rollback"}}, "rollback"), ({"rollout": {}}, "halt")],
)
def test_on_failure(spec: dict[str, Any] | None, expected: str) -> None:
    assert on_failure(spec) == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [Change("a", 1, 2)]),
        ({"s": {"image": "x:1"}}, {"s": {"image": "x:2"}}, [Change("s.image", "x:1", "x:2")]),
        ({}, {"rollout": {"onFailure": "rollback"}}, [Change("rollout", ABSENT, {"onFailure": "rollback"})]),
        ({"t": {"grace": 30}}, {"t": {}}, [Change("t.grace", 30, ABSENT)]),
        (
            {"env": [{"name": "A", "value": "1"}]},
            {"env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}]},
            [Change("env[0].value", "1", "2"), Change("env[1]", ABSENT, {"name": "B", "value": "3"})],
        ),
        ({"p": [1, 2]}, {"p": [1]}, [Change("p[1]", 2, ABSENT)]),
        ({"x": True}, {"x": 1}, [Change("x", True, 1)]),  # a type change is a change
    ],
)
def test_diff_specs(before: dict[str, Any], after: dict[str, Any], expected: list[Change]) -> None:
    assert list(diff_specs(before, after)) == expected


def test_change_kinds() -> None:
    assert [c.kind for c in diff_specs({"a": 1, "b": 1}, {"b": 2, "c": 3})] == ["removed", "changed", "added"]


@pytest.mark.parametrize(
    ("replicas", "running", "replace", "keep"),
    [
        ([ReplicaRef("w-2", A), ReplicaRef("w-1", A)], True, ("w-1", "w-2"), ()),
        ([ReplicaRef("w-1", B), ReplicaRef("w-2", A)], True, ("w-2",), ("w-1",)),
        ([ReplicaRef("w-1", A)], False, (), ()),  # stopped: its next `up` starts the new spec
        ([], True, (), ()),
    ],
)
def test_change_plan(
    replicas: list[ReplicaRef], running: bool, replace: tuple[str, ...], keep: tuple[str, ...]
) -> None:
    plan = change_plan(B, replicas, running=running)
    assert (plan.replace, plan.keep) == (replace, keep)
    assert plan.summary == (
        f"{len(replace)} replica(s) to replace one at a time: {', '.join(replace)}"
        if replace
        else "no replica to replace"
    )
