"""The scaling policy in force for an app, as the autoscaler obeys it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from orchestry.models.apps import App
from orchestry.models.scaling import scaling_section
from orchestry.workflows.revision import policy_in_force
from orchestry.workflows.scaling import ScalingPolicy


def effective_policy(session: Session, app: App, cap: int) -> ScalingPolicy:
    """The policy in force, its maxReplicas bound by the cluster's cap."""
    return policy_in_force(scaling_section(session, app), cap)
