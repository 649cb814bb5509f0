"""`GET /metrics`: Prometheus exposition, computed from the shared database at scrape time.

A custom collector rather than counters in process memory: any node answers the same, a restarted
controller loses nothing, and API workers keep no state (see the design card).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestry.models.apps import list_apps
from orchestry.models.base import aware
from orchestry.models.cluster import ControllerNode, current_lease, db_now
from orchestry.models.edge import Certificate
from orchestry.models.events import detail_values
from orchestry.models.metrics import latency_histograms, latest_rows
from orchestry.models.replicas import replicas_by_host
from orchestry.models.routing import ROUTING_NAME, RoutingState
from orchestry.models.scaling import action_counts
from orchestry.models.stats import app_stats, health_counts, job_stats
from orchestry.models.webhooks import OUTCOMES, list_webhooks
from orchestry.runtime.types import EngineUnavailable, HostLister, NodeInfo
from orchestry.web.app_metrics import fresh_since
from orchestry.web.context import ctx, session
from orchestry.web.openapi import operation
from orchestry.workflows.wake import WOKE_EVENT, wake_histogram

bp = Blueprint("metrics", __name__)


class StateCollector(Collector):
    def __init__(self, session: Session, node: str, fresh: datetime, hosts: list[NodeInfo] | None = None) -> None:
        self.session = session  # the request's own: a second connection would queue behind it on SQLite
        self.node = node
        self.fresh = fresh  # samples older than this are not current any more (no leader collects)
        self.hosts = hosts  # the Swarm's hosts (runtime: swarm, and its manager answered); None: no host gauges

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
        # Counters: a finished job stays finished and job rows are never purged, so both only grow.
        seconds = CounterMetricFamily(
            "orchestry_job_seconds", "Summed run time of finished jobs", labels=["kind", "status"]
        )
        finished = CounterMetricFamily("orchestry_jobs_finished", "Jobs that finished", labels=["kind", "status"])
        for j in jobs:
            count.add_metric([j.kind, j.status], j.count)
            if j.status in FINISHED:
                finished.add_metric([j.kind, j.status], j.count)
                seconds.add_metric([j.kind, j.status], j.seconds or 0.0)
        yield from (count, seconds, finished)
        yield from self._samples()
        health = GaugeMetricFamily(
            "orchestry_replica_health", "Running replicas by their health-check verdict", labels=["app", "state"]
        )
        for app, state, replicas in health_counts(self.session):
            health.add_metric([app, state], replicas)
        yield health
        # A gauge, not a counter: decisions older than the retention are deleted, so the count can go down.
        actions = GaugeMetricFamily(
            "orchestry_scaling_actions",
            "Scaling actions the autoscaler took (kept for metrics_retention_seconds), by direction",
            labels=["app", "direction"],
        )
        for action in action_counts(self.session):
            actions.add_metric([action.app, action.direction], action.count)
        yield actions
        leads = (
            lease is not None and lease.holder == self.node and lease.expires_at is not None and lease.expires_at > now
        )
        leader = GaugeMetricFamily("orchestry_leader", "1 when the node answering holds the lease", labels=["node"])
        leader.add_metric([self.node], 1.0 if leads else 0.0)
        yield leader
        yield GaugeMetricFamily("orchestry_leader_term", "The lease's current term", value=lease.term if lease else 0)
        yield from self._nodes(now)
        yield self._components()
        yield self._certificates()
        yield self._webhooks()
        if self.hosts is not None:
            yield from self._hosts(self.hosts)
        yield from self._wakes()

    def _hosts(self, hosts: list[NodeInfo]) -> Iterator[Metric]:
        """Per Swarm host: up (Swarm's state ready), available (active), and this installation's replicas there."""
        up = GaugeMetricFamily("orchestry_host_up", "1 when Swarm reports the host ready", labels=["host"])
        available = GaugeMetricFamily(
            "orchestry_host_available",
            "1 when the host takes new replicas (availability active); 0 paused or drained",
            labels=["host"],
        )
        replicas = GaugeMetricFamily("orchestry_host_replicas", "Replicas running on the host", labels=["host"])
        healthy = GaugeMetricFamily(
            "orchestry_host_healthy_replicas", "Replicas on the host passing their checks", labels=["host"]
        )
        counts = replicas_by_host(self.session)
        for h in hosts:
            running, ok = counts.get(h.name, (0, 0))
            up.add_metric([h.name], 1.0 if h.state == "ready" else 0.0)
            available.add_metric([h.name], 1.0 if h.availability == "active" else 0.0)
            replicas.add_metric([h.name], running)
            healthy.add_metric([h.name], ok)
        yield from (up, available, replicas, healthy)

    def _wakes(self) -> Iterator[Metric]:
        """Scale to zero: wakes that served (event app.woke) and how long each took from its first held
        request. Counters: events are kept."""
        latencies = detail_values(self.session, WOKE_EVENT, "latency_seconds")
        wakes = CounterMetricFamily("orchestry_app_wakes", "Wakes from zero replicas that served", labels=["app"])
        seconds = HistogramMetricFamily(
            "orchestry_app_wake_seconds",
            "Wake latency: from the first request held for an app at zero to its first replica serving",
            labels=["app"],
        )
        for app, values in sorted(latencies.items()):
            wakes.add_metric([app], len(values))
            buckets, total = wake_histogram(values)
            seconds.add_metric([app], buckets, total)
        yield from (wakes, seconds)

    def _webhooks(self) -> Metric:
        # Counters kept on the webhook row (its delivery history is trimmed): a deleted webhook's series ends.
        deliveries = CounterMetricFamily(
            "orchestry_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, failed (given up), retried, dropped (backlog full)",
            labels=["webhook", "outcome"],
        )
        for row in list_webhooks(self.session):
            for outcome in OUTCOMES:
                deliveries.add_metric([row.name, outcome], getattr(row, outcome))
        return deliveries

    def _certificates(self) -> Metric:
        expiry = GaugeMetricFamily(
            "orchestry_certificate_expiry_timestamp_seconds",
            "When each TLS certificate expires (Unix time); absent while none was issued",
            labels=["name", "source"],
        )
        issued = Certificate.not_after.is_not(None)
        rows = self.session.execute(select(Certificate.name, Certificate.source, Certificate.not_after).where(issued))
        for name, source, not_after in rows:
            if not_after is not None:
                expiry.add_metric([name, source], aware(not_after).timestamp())
        return expiry

    def _components(self) -> Metric:
        up = GaugeMetricFamily(
            "orchestry_component_up",
            "1 when this node's component (database, docker, nginx) worked at its last check, 0 when down",
            labels=["component"],
        )
        components = ctx().components
        for name, state in sorted((components() if components is not None else {}).items()):
            if state.up is not None:
                up.add_metric([name], 1.0 if state.up else 0.0)
        return up

    def _nodes(self, now: datetime) -> Iterator[Metric]:
        """Each node's heartbeat and the routing table its nginx serves, against the one the leader stored:
        a node whose generation lags, or whose reports stopped, routes an old table."""
        stored = self.session.scalar(select(RoutingState.generation).where(RoutingState.name == ROUTING_NAME))
        yield GaugeMetricFamily(
            "orchestry_routes_generation", "The routing table the leader stored (its generation)", value=stored or 0
        )
        heartbeat = GaugeMetricFamily(
            "orchestry_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat", labels=["node"]
        )
        served = GaugeMetricFamily(
            "orchestry_node_routes_generation",
            "The routing table the node's nginx last reported serving",
            labels=["node"],
        )
        reported = GaugeMetricFamily(
            "orchestry_node_routes_report_age_seconds",
            "Seconds since the node last reported its routes",
            labels=["node"],
        )
        for node in self.session.scalars(select(ControllerNode).order_by(ControllerNode.node_id)):
            heartbeat.add_metric([node.node_id], max(0.0, (now - aware(node.heartbeat_at)).total_seconds()))
            if node.routes_generation is not None and node.routes_reported_at is not None:
                served.add_metric([node.node_id], node.routes_generation)
                age = (now - aware(node.routes_reported_at)).total_seconds()
                reported.add_metric([node.node_id], max(0.0, age))
        yield from (heartbeat, served, reported)

    def _samples(self) -> Iterator[Metric]:
        """The latest fresh collection of each app: its figures, and each replica's CPU and memory."""
        rows = latest_rows(self.session, self.fresh)
        names = {a.id: a.name for a in list_apps(self.session)}
        per_app = {
            column: GaugeMetricFamily(f"orchestry_app_{name}", text, labels=["app"])
            for column, (name, text) in APP_GAUGES.items()
        }
        replica_cpu = GaugeMetricFamily(
            "orchestry_replica_cpu_percent",
            "% of the replica's CPU limit (of one core without one)",
            labels=["app", "replica"],
        )
        replica_memory = GaugeMetricFamily(
            "orchestry_replica_memory_percent",
            "% of the replica's memory limit (of the host's memory without one)",
            labels=["app", "replica"],
        )
        for row in rows:
            app = names.get(row.app_id)
            if app is None:
                continue
            if row.replica_name is None:
                for column, family in per_app.items():
                    value = getattr(row, column)
                    if value is not None:
                        family.add_metric([app], value / 1000.0 if column == "p95_ms" else value)
                continue
            if row.cpu_percent is not None:
                replica_cpu.add_metric([app, row.replica_name], row.cpu_percent)
            if row.memory_percent is not None:
                replica_memory.add_metric([app, row.replica_name], row.memory_percent)
        yield from per_app.values()
        yield from (replica_cpu, replica_memory)
        latency = HistogramMetricFamily(
            "orchestry_app_request_duration_seconds",
            "Response time nginx saw for the app's requests, since Orchestry started counting them",
            labels=["app"],
        )
        for app_id, histogram in latency_histograms(self.session):
            if app_id in names:
                buckets = [("+Inf" if le == float("inf") else repr(le), n) for le, n in histogram.cumulative()]
                latency.add_metric([names[app_id]], buckets, histogram.sum_seconds)
        yield latency


FINISHED = ("succeeded", "failed", "cancelled")
# Sample column -> (metric name after `orchestry_app_`, help). p95 is exported in seconds (Prometheus' base unit).
APP_GAUGES = {
    "cpu_percent": ("cpu_percent", "Mean CPU of the ready replicas, % of each one's limit (latest sample)"),
    "memory_percent": ("memory_percent", "Mean memory of the ready replicas, % of each one's limit (latest sample)"),
    "rps": ("requests_per_second", "Requests per second nginx served for the app (latest sample)"),
    "p95_ms": ("p95_latency_seconds", "95th percentile response time nginx saw for the app (latest sample)"),
    "active_connections": ("active_connections", "Connections open through nginx to the app (latest sample)"),
    "error_rate": ("error_ratio", "Share of the app's responses that were server errors, 0-1 (latest sample)"),
}


@bp.get("/metrics")
@operation(
    "Prometheus metrics: apps, replicas, resource use, traffic, health, jobs, leadership",
    tag="system",
    responses={200: "text/plain"},
)
def metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    _now, fresh = fresh_since(session())
    registry.register(StateCollector(session(), ctx().settings.node_id, fresh, _hosts()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _hosts() -> list[NodeInfo] | None:
    """The Swarm's hosts for the host gauges, read from its manager (like `GET /api/v1/hosts`); None on the
    docker runtime or when the manager does not answer (the scrape still answers, without them)."""
    runtime = ctx().runtime
    if ctx().settings.runtime != "swarm" or not isinstance(runtime, HostLister):
        return None
    try:
        return runtime.nodes()
    except EngineUnavailable:
        return None
