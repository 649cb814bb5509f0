"""What registering a spec does to an app (workflows/registration.py): the one plan `register` applies and
`register --dry-run` shows."""

from __future__ import annotations

import pytest

from orchestry.workflows.registration import CurrentApp, plan_registration


@pytest.mark.parametrize(
    ("current", "content_hash", "action", "revision"),
    [
        (None, "h1", "created", 1),
        (CurrentApp(1, "h1", "running"), "h1", "unchanged", 1),
        (CurrentApp(1, "h1", "running"), "h2", "revised", 2),
        (CurrentApp(3, "h1", "stopped", highest=3), "h2", "revised", 4),
        # a number is never reused: the next after the highest stored, even above the one in force
        (CurrentApp(3, "h1", "running", highest=5), "h2", "revised", 6),
        (CurrentApp(2, "h1", "deleting", highest=2), "h2", "refused", 2),
        (CurrentApp(2, "h1", "deleting", highest=2), "h1", "refused", 2),
    ],
)
def test_plan(current: CurrentApp | None, content_hash: str, action: str, revision: int) -> None:
    plan = plan_registration("web", current, content_hash)
    assert (plan.action, plan.revision) == (action, revision)


def test_a_revision_message_names_the_number_it_gets() -> None:
    plan = plan_registration("web", CurrentApp(3, "h1", "running", highest=5), "h2")
    assert plan.message == "app web revised: revision 3 -> 6"
