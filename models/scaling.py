"""Autoscaling state: each app's policy in force, and every decision the autoscaler took.

The policy in force is the spec's `scaling` section unless a user replaced it through the API
(`PUT /apps/<name>/scaling`): that replacement is stored on the app (`apps.scaling_policy`) and survives
restarts and failovers; a new revision whose `scaling` section differs from the previous revision's
clears it (the spec speaks again).

Every evaluation is stored (`scaling_decisions`): the stabilization window needs the recent
recommendations, and the history shows the decisions that changed the replica count, each with its
metric snapshot and reason. Decisions that changed nothing are kept for an hour, the others as long as
metric samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from orchestry.models.apps import App, get_revision
from orchestry.models.base import Base, affected, aware, utcnow
from orchestry.models.replicas import Replica
from orchestry.workflows.revision import revision_view
from orchestry.workflows.scaling import (
    Recommendation,
    ReplicaState,
    ScaleDecision,
    ScalingHistory,
)

UNCHANGED_KEEP = timedelta(hours=1)  # >= any stabilization window a spec may ask for
PURGE_BATCH = 5000


class ScalingDecisionRow(Base):
    __tablename__ = "scaling_decisions"
    __table_args__ = (
        Index("ix_scaling_decisions_app_id_created_at", "app_id", "created_at"),
        Index("ix_scaling_decisions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    current: Mapped[int] = mapped_column(Integer)
    target: Mapped[int] = mapped_column(Integer)
    recommended: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(8))
    changed: Mapped[bool] = mapped_column(Boolean, default=False, doc="a scale job was enqueued for it")
    burst: Mapped[bool] = mapped_column(Boolean, default=False)
    governing: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    ratios: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict, doc="the window the decision saw")
    job_id: Mapped[int | None] = mapped_column(BigInteger)


def section_in_force(app: App, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The policy in force, as a spec's normalised `scaling` section: the API's, else that of `spec` (the
    app's revision in force, which the caller has read)."""
    if app.scaling_policy is not None:
        return dict(app.scaling_policy)
    return dict(spec.get("scaling") or {})


def scaling_section(session: Session, app: App) -> dict[str, Any]:
    """The policy in force (`section_in_force`), reading the app's revision."""
    revision = get_revision(session, app)
    return section_in_force(app, revision.spec if revision else {})


def policy_source(app: App) -> str:
    return "api" if app.scaling_policy is not None else "spec"


def decision_fields(decision: ScaleDecision) -> dict[str, Any]:
    """A decision as stored and as answered (the API's evaluate says the same without storing it)."""
    return {
        "current": decision.current,
        "target": decision.target,
        "recommended": decision.recommended,
        "direction": decision.direction,
        "burst": decision.burst,
        "governing": decision.governing,
        "reason": decision.reason,
        "ratios": dict(decision.ratios),
    }


def record_decision(
    session: Session, app: App, decision: ScaleDecision, metrics: dict[str, Any], changed: bool, job_id: int | None
) -> ScalingDecisionRow:
    row = ScalingDecisionRow(
        app_id=app.id, created_at=utcnow(), changed=changed, metrics=metrics, job_id=job_id, **decision_fields(decision)
    )
    session.add(row)
    return row


def history_for(session: Session, app_id: int, now: datetime, window_seconds: float) -> ScalingHistory:
    """What the decision needs from the past: recent recommendations and the last scaling action."""
    return histories(session, [app_id], now, window_seconds)[app_id]


def histories(
    session: Session, app_ids: Sequence[int], now: datetime, window_seconds: float
) -> dict[int, ScalingHistory]:
    """What the decisions of these apps (with the same stabilization window) need from the past: recent
    recommendations and the last scaling action, in two queries."""
    if not app_ids:
        return {}
    since = now - timedelta(seconds=window_seconds)
    ids = list(app_ids)
    recent: dict[int, list[Recommendation]] = {app_id: [] for app_id in ids}
    for app_id, at, replicas in session.execute(
        select(ScalingDecisionRow.app_id, ScalingDecisionRow.created_at, ScalingDecisionRow.recommended).where(
            ScalingDecisionRow.app_id.in_(ids), ScalingDecisionRow.created_at >= since
        )
    ):
        recent[app_id].append(Recommendation(aware(at), replicas))
    last: dict[int, datetime | None] = {
        app_id: at
        for app_id, at in session.execute(
            select(ScalingDecisionRow.app_id, func.max(ScalingDecisionRow.created_at))
            .where(ScalingDecisionRow.app_id.in_(ids), ScalingDecisionRow.changed.is_(True))
            .group_by(ScalingDecisionRow.app_id)
        )
    }
    return {
        app_id: ScalingHistory(
            recommendations=tuple(recent[app_id]),
            last_scaled_at=aware(scaled) if (scaled := last.get(app_id)) is not None else None,
        )
        for app_id in ids
    }


def decisions(session: Session, app_id: int, *, limit: int = 50, changes_only: bool = True) -> list[ScalingDecisionRow]:
    stmt = select(ScalingDecisionRow).where(ScalingDecisionRow.app_id == app_id)
    if changes_only:
        stmt = stmt.where(ScalingDecisionRow.changed.is_(True))
    return list(session.scalars(stmt.order_by(ScalingDecisionRow.id.desc()).limit(limit)))


@dataclass(frozen=True)
class ActionCount:
    app: str
    direction: str
    count: int


def action_counts(session: Session) -> list[ActionCount]:
    """Scaling actions per app and direction, for Prometheus (as long as decisions are kept)."""
    rows = session.execute(
        select(App.name, ScalingDecisionRow.direction, func.count(ScalingDecisionRow.id))
        .join(App, App.id == ScalingDecisionRow.app_id)
        .where(ScalingDecisionRow.changed.is_(True))
        .group_by(App.name, ScalingDecisionRow.direction)
    ).all()
    return [ActionCount(name, direction, int(count)) for name, direction, count in rows]


def purge_decisions(session: Session, now: datetime, retention_seconds: float) -> int:
    """Unchanged decisions after an hour, the others after the metrics' retention; bounded batches."""
    unchanged = (ScalingDecisionRow.changed.is_(False)) & (ScalingDecisionRow.created_at < now - UNCHANGED_KEEP)
    old = ScalingDecisionRow.created_at < now - timedelta(seconds=retention_seconds)
    ids = select(ScalingDecisionRow.id).where(unchanged | old).limit(PURGE_BATCH).scalar_subquery()
    return affected(session.execute(delete(ScalingDecisionRow).where(ScalingDecisionRow.id.in_(ids))))


def replica_states_of(session: Session, probed: Mapping[int, bool]) -> dict[int, tuple[ReplicaState, ...]]:
    """The replicas of these apps that exist and are not leaving, in one query; ready = in rotation (healthy,
    or the app has no check: `probed` maps an app id to whether its revision has one)."""
    out: dict[int, list[ReplicaState]] = {app_id: [] for app_id in probed}
    if not probed:
        return {}
    rows = session.execute(
        select(Replica.app_id, Replica.name, Replica.health)
        .where(Replica.app_id.in_(list(probed)), Replica.drain_started_at.is_(None), Replica.state == "running")
        .order_by(Replica.app_id, Replica.name)
    )
    for app_id, name, health in rows:
        out[app_id].append(ReplicaState(name, health == "healthy" or not probed[app_id]))
    return {app_id: tuple(states) for app_id, states in out.items()}


def replica_states(session: Session, app: App) -> tuple[ReplicaState, ...]:
    """Replicas that exist and are not leaving; ready = in rotation (healthy, or the app has no check)."""
    revision = get_revision(session, app)
    probed = revision_view(revision.spec if revision else None).probed
    return replica_states_of(session, {app.id: probed})[app.id]
