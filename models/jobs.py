"""Jobs: Orchestry's own queue and its history. The row is the truth, not the scheduler's memory.

`lock` carries the app an operation works on; a partial unique index lets at most one live (queued or
running) job hold a given lock, so "one operation per app" is enforced by the database. An idempotency
key makes a repeated request return the job it already created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestry.models.base import Base, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LIVE_STATUSES = ("queued", "running")
_LIVE = "status IN ('queued', 'running')"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("uq_jobs_live_lock", "lock", unique=True, sqlite_where=text(_LIVE), postgresql_where=text(_LIVE)),
        Index("ix_jobs_status_run_after", "status", "run_after"),
        Index("ix_jobs_app_name_created_at", "app_name", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    app_name: Mapped[str | None] = mapped_column(String(63))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    lock: Mapped[str | None] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(128), doc="node that claimed it")
    term: Mapped[int | None] = mapped_column(BigInteger, doc="leader term of the claim (fencing)")
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    steps: Mapped[list[Any]] = mapped_column(default=list, doc="progress, one entry per finished step")
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
