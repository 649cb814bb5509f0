"""The replica counts an operation may ask for under the scaling policy in force (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.workflows.revision import replicas_problem


@pytest.mark.parametrize(
    ("section", "cap", "replicas", "problem"),
    [
        (None, 20, 1, None),  # defaults: minReplicas 1, maxReplicas 5
        (None, 20, 5, None),
        (None, 20, 6, "must be <= 5, its maxReplicas (5)"),
        ({"maxReplicas": 50}, 20, 21, "must be <= 20, the configured cap (20)"),
        ({"maxReplicas": 50}, 20, 20, None),
        (None, 20, 0, "must be >= 1, its minReplicas"),  # the autoscaler would bring it back to 1 at once
        ({"minReplicas": 0}, 20, 0, None),
        ({"minReplicas": 3, "maxReplicas": 5}, 20, 2, "must be >= 3, its minReplicas"),
        ({"minReplicas": 3, "maxReplicas": 5, "mode": "manual"}, 20, 2, "must be >= 3, its minReplicas"),
        ({"minReplicas": 3, "maxReplicas": 5}, 20, 3, None),
    ],
)
def test_replicas_problem(section: dict[str, Any] | None, cap: int, replicas: int, problem: str | None) -> None:
    found = replicas_problem(section, cap, replicas)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found
