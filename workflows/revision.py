"""One typed, frozen view of a revision's normalised spec.

Every reader of a stored spec (the converge job, the router, the health sweep, the API's summaries, the
autoscaler) asks this view instead of digging in the dict, so each default is applied in one place (the
spec model's) and the cluster's `max_replicas` cap in one function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestry.spec.model import Termination, Workload
from orchestry.workflows.health import CheckPolicy
from orchestry.workflows.health import policy_from_spec as probe_policy
from orchestry.workflows.scaling import ScalingPolicy
from orchestry.workflows.scaling import policy_from_spec as scaling_policy

DEFAULT_TYPE: str = Workload.model_fields["type"].default
DEFAULT_DRAIN_SECONDS = float(Termination().drain_seconds)
DEFAULT_GRACE_SECONDS = float(Termination().grace_period_seconds)


@dataclass(frozen=True)
class RevisionView:
    """What the controller needs of one revision. An empty spec (no revision: the app is gone) runs
    nothing, routes nothing and stops its leftovers without grace."""

    type: str
    image: str
    probe: CheckPolicy | None
    drain_seconds: float
    grace_seconds: float

    @property
    def routed(self) -> bool:
        """nginx routes to it: an http app (a worker only runs)."""
        return self.type == "http"

    @property
    def probed(self) -> bool:
        """It has a health check: a replica serves once healthy (without one, once running)."""
        return self.probe is not None


def revision_view(spec: Mapping[str, Any] | None) -> RevisionView:
    if not spec:
        return RevisionView(type="", image="", probe=None, drain_seconds=0.0, grace_seconds=0.0)
    workload: Mapping[str, Any] = spec.get("spec") or {}
    termination: Mapping[str, Any] = spec.get("termination") or {}
    kind = str(workload.get("type", DEFAULT_TYPE))
    return RevisionView(
        type=kind,
        image=str(workload.get("image", "")),
        probe=probe_policy(spec.get("healthCheck")),
        drain_seconds=float(termination.get("drainSeconds", DEFAULT_DRAIN_SECONDS)) if kind == "http" else 0.0,
        grace_seconds=float(termination.get("gracePeriodSeconds", DEFAULT_GRACE_SECONDS)),
    )


def policy_in_force(section: Mapping[str, Any] | None, cap: int) -> ScalingPolicy:
    """A scaling section as the autoscaler applies it: maxReplicas (and minReplicas) within the cap."""
    policy = scaling_policy(section)
    if policy.max_replicas > cap:
        policy = dataclasses.replace(policy, max_replicas=cap, min_replicas=min(policy.min_replicas, cap))
    return policy


def replicas_problem(section: Mapping[str, Any] | None, cap: int, replicas: int) -> str | None:
    """Why an operation may not ask for `replicas` under the scaling policy in force (`section`) and the
    configured cap, as the rule an error names; None: it may. Below minReplicas is refused rather than
    accepted: the autoscaler would bring the app back inside its bounds at once, in manual mode too."""
    policy = scaling_policy(section)
    if replicas > min(policy.max_replicas, cap):
        if policy.max_replicas <= cap:
            return f"must be <= {policy.max_replicas}, its maxReplicas ({policy.max_replicas})"
        return f"must be <= {cap}, the configured cap ({cap})"
    if replicas < policy.min_replicas:
        return (
            f"must be >= {policy.min_replicas}, its minReplicas (`orchestry down` stops every replica; "
            "`orchestry scaling APP --set minReplicas=N` lowers the bound)"
        )
    return None
