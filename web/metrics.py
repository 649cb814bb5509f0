"""`GET /metrics`: Prometheus exposition, computed from the shared database at scrape time.

A custom collector rather than counters in process memory: any node answers the same, a restarted
controller loses nothing, and API workers keep no state (see the design card).
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from orchestry.models.cluster import current_lease, db_now
from orchestry.models.stats import app_stats, job_stats
from orchestry.web.context import ctx, session
from orchestry.web.openapi import operation

bp = Blueprint("metrics", __name__)


class StateCollector(Collector):
    def __init__(self, session: Session, node: str) -> None:
        self.session = session  # the request's own: a second connection would queue behind it on SQLite
        self.node = node

    def collect(self) -> Iterator[Metric]:
        apps = app_stats(self.session)
        jobs = job_stats(self.session)
        lease = current_lease(self.session)
        now = db_now(self.session)
        desired = GaugeMetricFamily("orchestry_app_desired_replicas", "Replicas the app should run", labels=["app"])
        running = GaugeMetricFamily("orchestry_app_running_replicas", "Replica containers running", labels=["app"])
        ready = GaugeMetricFamily("orchestry_app_ready_replicas", "Replicas healthy and in rotation", labels=["app"])
        for a in apps:
            desired.add_metric([a.name], a.desired)
            running.add_metric([a.name], a.running)
            ready.add_metric([a.name], a.healthy)
        yield from (desired, running, ready)
        count = GaugeMetricFamily("orchestry_jobs", "Jobs in the table by kind and status", labels=["kind", "status"])
        seconds = GaugeMetricFamily(
            "orchestry_job_seconds_total", "Summed run time of finished jobs", labels=["kind", "status"]
        )
        for j in jobs:
            count.add_metric([j.kind, j.status], j.count)
            if j.seconds:
                seconds.add_metric([j.kind, j.status], j.seconds)
        yield from (count, seconds)
        leads = (
            lease is not None and lease.holder == self.node and lease.expires_at is not None and lease.expires_at > now
        )
        leader = GaugeMetricFamily("orchestry_leader", "1 when the node answering holds the lease", labels=["node"])
        leader.add_metric([self.node], 1.0 if leads else 0.0)
        yield leader
        yield GaugeMetricFamily("orchestry_leader_term", "The lease's current term", value=lease.term if lease else 0)


@bp.get("/metrics")
@operation("Prometheus metrics: apps, replicas, jobs, leadership", tag="system", responses={200: "text/plain"})
def metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(session(), ctx().settings.node_id))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
