"""Metric samples, per app (replica_name NULL) or per replica, kept for a retention period.

Wide rows (one column per metric) keep window queries to a single indexed range scan.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from orchestry.models.base import Base, utcnow


class MetricSample(Base):
    __tablename__ = "metric_samples"
    __table_args__ = (
        Index("ix_metric_samples_app_id_taken_at", "app_id", "taken_at"),  # window queries: one range scan
        Index("ix_metric_samples_taken_at", "taken_at"),  # retention: the oldest rows first, without a scan
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    replica_name: Mapped[str | None] = mapped_column(String(128))
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_percent: Mapped[float | None] = mapped_column(Float)
    rps: Mapped[float | None] = mapped_column(Float)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    active_connections: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    ready_replicas: Mapped[int | None] = mapped_column(Integer)
