"""Rows a database test starts from, written as the control plane would leave them: a registered app that
runs healthy replicas, and the metrics samples its collections stored. No Docker, no nginx."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from orchestry.models.apps import App, get_app
from orchestry.models.base import utcnow
from orchestry.models.metrics import MetricSample
from orchestry.models.replicas import Replica
from orchestry.operations.registration import Submission, register
from orchestry.spec import load_specs

SAMPLE_STEP = timedelta(seconds=2)  # the metrics collection period the samples are spaced by


def running_app(s: Session, name: str, spec_yaml: str, replicas: int, port_base: int) -> App:
    """`spec_yaml` registered as `name` and running `replicas` healthy replicas (`name-1`...), started five
    minutes ago, each published on port_base + its slot (as container port 8080)."""
    loaded = load_specs(spec_yaml, "application/yaml").specs[0]
    register(s, Submission(name, loaded.normalized, loaded.content_hash, ()), raw="", raw_format="yaml", actor="t")
    app = get_app(s, name)
    assert app is not None
    app.status, app.desired_replicas = "running", replicas
    s.flush()
    started = utcnow() - timedelta(minutes=5)
    for slot in range(1, replicas + 1):
        port = port_base + slot
        s.add(
            Replica(
                app_id=app.id,
                name=f"{name}-{slot}",
                slot=slot,
                revision=1,
                container_id=f"{name}-c{slot}",
                state="running",
                health="healthy",
                host="127.0.0.1",
                port=port,
                ports={"8080": port},
                started_at=started,
            )
        )
    return app


def samples(app_id: int, now: datetime, count: int, replica: str | None = None, **figures: Any) -> list[MetricSample]:
    """`count` samples of the app (`replica` None) or of one replica, the newest at `now`, SAMPLE_STEP apart."""
    return [
        MetricSample(app_id=app_id, replica_name=replica, taken_at=now - k * SAMPLE_STEP, **figures)
        for k in range(count)
    ]
