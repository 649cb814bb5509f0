"""One controller node: the lease loop, Docker's events (every node), and while it leads, the scheduler and the
dispatcher.

Two words for two things: a *sweep* is one of the leader's periodic callables (reconcile, health-sweep,
metrics-collect, autoscale, nginx-render; `controller/periodic.py`), run by APScheduler; a *job* is a queued
operation in Orchestry's jobs table (deploy, scale, stop, delete, reconcile, health-check; `jobs/`), claimed
by the dispatcher. A sweep finds work and enqueues jobs; it never acts on containers itself.

APScheduler holds the sweeps under fixed ids, in its SQLAlchemy job store fenced by the lease (the 0.5 s
health tick in memory); each leader adds them again when elected. It starts paused on every node and only the
leader resumes it; a node that loses the lease pauses it again (never shutdown() + start(), which breaks
APScheduler 3).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from orchestry.config import Settings
from orchestry.config.secretbox import load_box
from orchestry.controller import periodic
from orchestry.controller.acme import CERT_SWEEP_SECONDS, CertSweep
from orchestry.controller.autoscaler import Autoscaler
from orchestry.controller.components import ComponentMonitor, ComponentProbe
from orchestry.controller.dispatcher import Dispatcher
from orchestry.controller.edge import EdgeSync
from orchestry.controller.health import HealthSweep
from orchestry.controller.hosts import HOST_SWEEP_SECONDS, HostSweep
from orchestry.controller.jobstore import FencedJobStore
from orchestry.controller.leadership import FencedScheduler, Leadership
from orchestry.controller.metrics import MetricsCollector
from orchestry.controller.mirror import RouteMirror
from orchestry.controller.observed import EventAwareRuntime
from orchestry.controller.routing import NginxWriter, RouteSync
from orchestry.controller.sweeps import enqueue_repairs, reconcile_sweep
from orchestry.controller.wake import WakeWatcher
from orchestry.controller.watch import EventWatcher
from orchestry.jobs.base import NotLeader, TemporaryError
from orchestry.models import jobs as jobq
from orchestry.models.cluster import traffic_reports
from orchestry.models.db import lease_engine, make_sessionmaker, reads_of
from orchestry.models.events import record
from orchestry.models.replicas import address_of_container, mark_exited
from orchestry.nginx.external import ExternalNginx, ExternalPaths
from orchestry.nginx.manager import ControlledNginx, NginxError, NginxManager, worker_identity
from orchestry.nginx.render import NginxSettings
from orchestry.nginx.traffic import TrafficMeter
from orchestry.operations.request import request_task
from orchestry.probe import Prober, ProberError
from orchestry.runtime.types import EngineEvent, HostLister, Runtime

DOWN_SECONDS = 10.0  # how long nginx skips a dead replica's address (the table without it lands well before)
log = logging.getLogger("orchestry.controller")
NGINX_CHECK_SECONDS = 5.0
DRAIN_AGAIN_SECONDS = 60.0  # a host still lost this long after its drain was enqueued gets another
TICKS = "ticks"  # the in-memory job store of the sub-second health tick
PEER_TRAFFIC_SECONDS = 5.0  # an older report is from a node that stopped counting: left out


def nginx_settings(settings: Settings) -> NginxSettings:
    worker_user, worker_group = worker_identity()
    return NginxSettings(
        prefix=Path(settings.data_dir) / "nginx",
        listen_port=settings.proxy_port,
        bind_address=settings.proxy_host,
        control_port=settings.nginx_control_port,
        domain=settings.domain,
        stale_after=settings.routes_stale_seconds,
        tls_port=settings.proxy_tls_port or None,
        user=worker_user,  # as root, nginx's workers run as nobody (never as root)
        group=worker_group,
    )


def nginx_manager(settings: Settings) -> ControlledNginx | None:
    """The nginx this node drives, per the `nginx` setting: its own, an existing one, or none."""
    if settings.nginx == "managed":
        return NginxManager(nginx_settings(settings), binary=settings.nginx_binary)
    if settings.nginx == "external":
        paths = ExternalPaths(
            conf=Path(settings.nginx_conf),
            include=Path(settings.nginx_include),
            binary=settings.nginx_binary,
            reload_command=settings.nginx_reload_command,
        )
        return ExternalNginx(nginx_settings(settings), paths)
    return None


class Controller:
    def __init__(self, settings: Settings, engine: Engine, runtime: Runtime) -> None:
        self.settings = settings
        self.engine = engine
        self.runtime = EventAwareRuntime(runtime)
        self.sessions = make_sessionmaker(engine)
        # The lease has a connection of its own: a renewal never waits for one the API or jobs hold.
        self.lease_engine = lease_engine(engine)
        self.leadership = Leadership(
            make_sessionmaker(self.lease_engine),
            node=settings.node_id,
            address=f"http://{settings.host}:{settings.port}",
            lease_seconds=settings.lease_seconds,
            renew_seconds=settings.renew_seconds,
            on_elected=self._elected,
            on_deposed=self._deposed,
        )
        self.components = ComponentMonitor(on_down=self._component_down)  # logged once per change
        self.probe = ComponentProbe(self.components, self.sessions, runtime, settings.cluster_name, settings.node_id)
        self.nginx = nginx_manager(settings)
        writer = NginxWriter(self.nginx) if self.nginx is not None else None  # one writer of this node's nginx
        self.router = RouteSync(self.sessions, self.nginx, settings.node_id, writer) if self.nginx is not None else None
        self.mirror = (
            RouteMirror(
                self.sessions,
                self.nginx,
                settings.node_id,
                self.components,
                writer,
                edge=EdgeSync(self.sessions, self.nginx, lambda: load_box(settings)),
                leading=lambda: self.leadership.leading,
            )
            if self.nginx is not None
            else None
        )
        self.prober = Prober()
        self.health = HealthSweep(
            self.sessions,
            self.prober,
            self.router,
            self._unhealthy,
            may_write=lambda: self.leadership.leading,
            on_hosts_lost=self._hosts_lost if settings.runtime == "swarm" else None,
        )
        self._drains: dict[str, float] = {}  # host address -> when its drain was last enqueued
        self.hosts = (
            HostSweep(self.sessions, runtime, self.prober)
            if settings.runtime == "swarm" and isinstance(runtime, HostLister)
            else None
        )
        self.certs = CertSweep(self.sessions)  # `tls: auto` hosts without a valid certificate: cert-issue jobs
        self.metrics = MetricsCollector.for_runtime(
            self.sessions,
            runtime,
            settings.metrics_retention_seconds,
            settings.metrics_full_resolution_seconds,
            fence=self.leadership.fence,
        )
        if self.nginx is not None:
            self.metrics.traffic = TrafficMeter(self.nginx, peers=self._peer_traffic)
        self.dispatcher = Dispatcher(self.sessions, self.runtime, settings, self.leadership, self.router, self.health)
        self.autoscaler = Autoscaler(
            self.sessions,
            self.leadership.fence,
            max_replicas=settings.max_replicas,
            retention_seconds=settings.metrics_retention_seconds,
            wake=self.dispatcher.wake,
        )
        # Requests held for an app at zero on this node's nginx wake it at once, whichever node leads.
        self.waker = (
            WakeWatcher(self.sessions, self.nginx, settings.node_id, self.dispatcher.wake)
            if self.nginx is not None
            else None
        )
        self._dirty = threading.Event()
        self._sweeping = threading.Event()
        self.watcher = EventWatcher(runtime, settings.cluster_name, self._container_event)
        self.scheduler = FencedScheduler(
            lambda: self.leadership.leading,
            # The sweeps live in the SQLAlchemy job store, fenced by the lease (one next-run write per sweep
            # run: about one a second). The health tick (every 0.5 s, it only looks for probes that are due)
            # is kept in memory: persisting it was two writes a second for nothing, and every leader adds it
            # again when elected. Orchestry's jobs table is the durable queue of operations.
            jobstores={"default": FencedJobStore(engine, self.leadership.fence), TICKS: MemoryJobStore()},
            executors={"default": SchedulerPool(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=UTC,
        )
        self.notify = None
        if engine.dialect.name == "postgresql":
            from orchestry.controller.notify import NotifyListener

            self.notify = NotifyListener(engine.url, self.dispatcher.wake)

    def start(self) -> None:
        periodic.current = self
        self.probe.start()
        self.scheduler.start(paused=True)
        if self.notify is not None:
            self.notify.start()
        self.leadership.start()
        if self.mirror is not None:
            self.mirror.start()  # every node routes, the leader included
        # Every node watches Docker's events: each marks a dead replica down in its own nginx at once (a
        # follower's table would drop it only after the leader's push and the mirror's next pass); the leader
        # also repairs.
        self.watcher.start()
        if self.waker is not None:
            self.waker.start()

    def stop(self) -> None:
        self.probe.stop(wait=0)  # no new probes from now on; joined below
        self.leadership.stop()  # steps down (pausing everything) and releases the lease
        if self.notify is not None:
            self.notify.stop()
        self.watcher.stop()
        self.dispatcher.shutdown()
        self.scheduler.shutdown(wait=False)
        self.prober.close()
        self.metrics.close()
        if self.mirror is not None:
            self.mirror.stop()
        if self.waker is not None:
            self.waker.stop(join=0)  # its long-poll ends with nginx, just below
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx.close()
        if self.waker is not None:
            self.waker.stop(join=1.0)
        self.probe.stop()
        if self.lease_engine is not self.engine:
            self.lease_engine.dispose()
        periodic.current = None

    def _component_down(self, name: str, error: str | None) -> None:
        """An outage began: one event in the audit trail (`nginx.failed`, `docker.failed`; not the database's)."""
        if name == "database":
            return
        try:
            with self.sessions.begin() as session:
                record(session, f"{name}.failed", f"{name}: {error}", actor=f"node:{self.settings.node_id}")
        except SQLAlchemyError as exc:
            log.debug("could not record the outage", extra={"component": name, "error": str(exc).splitlines()[0]})

    def _container_event(self, event: EngineEvent) -> None:
        """A container event, on every node: the down mark in this node's nginx first; then, on the leader
        only, the repair (the event remembered by the runtime, the replica unrouted, a reconcile)."""
        if event.action in ("die", "oom"):
            self._mark_down(event.container_id)  # first: requests stop going there within milliseconds
        self.runtime.saw(event)  # a follower remembers too: if elected next, its first reconcile knows
        if not self.leadership.leading:
            return
        if event.action in ("die", "oom"):
            self._unroute(event.container_id)
        self.reconcile_now()

    def _mark_down(self, container_id: str) -> None:
        """Before anything else on a replica's death: nginx skips its address now (one indexed read, one
        loopback call), while the table without it is computed and pushed (`_unroute`, which takes the
        database's write lock and the router's lock, and may wait behind a push or a job's write). The mark
        expires after DOWN_SECONDS; by then the table no longer holds the address. Every node does this for
        its own nginx, the followers included: theirs would otherwise drop the address only once the leader's
        new table is stored and their mirror's next pass (every 0.25 s) pushes it."""
        if self.nginx is None:
            return
        try:
            with reads_of(self.sessions)() as session:
                address = address_of_container(session, container_id)
            if address is not None:
                self.nginx.mark_down([address], DOWN_SECONDS)
                log.info("dead replica skipped by nginx", extra={"container": container_id[:12], "address": address})
        except (NginxError, SQLAlchemyError) as exc:  # the table push that follows takes it out anyway
            log.warning("could not mark a dead replica down", extra={"container": container_id, "error": str(exc)})

    def _peer_traffic(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """The other nodes' nginx counters, as their route mirrors reported them (traffic enters everywhere)."""
        with self.sessions() as session:
            return traffic_reports(session, PEER_TRAFFIC_SECONDS, exclude=self.settings.node_id)

    def _unroute(self, container_id: str) -> None:
        """A replica died: out of the routing table now, not when its replacement is ready (nginx would
        otherwise keep trying it, and a POST that reaches a dead replica is not retried elsewhere)."""
        if self.router is None or not self.leadership.leading:
            return
        try:
            with self.sessions.begin() as session:
                changed = mark_exited(session, container_id)
            if changed:
                self.router.sync()
        except (TemporaryError, SQLAlchemyError) as exc:  # the next job or sweep routes it out anyway
            log.warning("could not unroute a dead replica", extra={"container": container_id, "error": str(exc)})

    def reconcile_now(self) -> None:
        """Run the reconcile sweep as soon as possible (a Docker event, a new term).

        A sweep already running when this is called may have observed too early, so it sweeps once more."""
        if not self.leadership.leading:  # a deposed leader's late Docker event must not touch the job store
            return
        self._dirty.set()
        if self._sweeping.is_set():
            return  # the running sweep goes round once more
        with contextlib.suppress(JobLookupError):
            self.scheduler.modify_job("reconcile", next_run_time=datetime.now(UTC))

    def _elected(self, term: int) -> None:
        self.health.forget()  # another leader may have written replicas meanwhile: the first tick reads them
        with self.sessions.begin() as session:
            requeued = jobq.requeue_abandoned(
                session, node=self.settings.node_id, term=term, running_here=set(self.dispatcher.in_flight)
            )
            record(
                session,
                "leader.elected",
                f"node {self.settings.node_id} leads (term {term})",
                actor=f"node:{self.settings.node_id}",
                term=term,
                requeued_jobs=requeued,
            )
        with contextlib.suppress(JobLookupError):  # stored by older versions; the dispatcher's poll covers it
            self.scheduler.remove_job("dispatch")
        every = self._sweep
        every(periodic.RECONCILE, self.settings.reconcile_seconds, "reconcile", now=True)
        every(periodic.HEALTH, self.settings.health_sweep_seconds, "health-sweep", store=TICKS)
        every(periodic.AUTOSCALE, self.settings.autoscale_seconds, "autoscale")
        every(periodic.METRICS, self.settings.metrics_seconds, "metrics-collect")
        if self.nginx is not None:
            every(periodic.NGINX, NGINX_CHECK_SECONDS, "nginx-render", now=True)
            every(periodic.CERTS, CERT_SWEEP_SECONDS, "cert-sweep", now=True)
        if self.hosts is not None:  # kept in memory like the health tick: every leader adds it when elected
            every(periodic.HOSTS, HOST_SWEEP_SECONDS, "host-sweep", store=TICKS)
        self.scheduler.resume()
        self.dispatcher.start()

    def _sweep(self, func: str, seconds: float, job_id: str, now: bool = False, store: str = "default") -> None:
        """A periodic sweep under its fixed id (replacing the one a previous term stored)."""
        first = {"next_run_time": datetime.now(UTC)} if now else {}
        self.scheduler.add_job(
            func, "interval", seconds=seconds, id=job_id, replace_existing=True, jobstore=store, **first
        )

    def _deposed(self, term: int) -> None:
        self.scheduler.pause()
        self.dispatcher.stop()  # the watcher goes on: this node's nginx still takes down marks

    def run_reconcile(self) -> list[int]:
        ids: list[int] = []
        self._sweeping.set()
        try:
            for _ in range(10):
                self._dirty.clear()
                if not self.leadership.leading:
                    return ids
                try:
                    fence = self.leadership.fence()
                    ids += reconcile_sweep(self.sessions, self.runtime, self.settings.cluster_name, fence)
                except NotLeader:
                    return ids
                if ids:
                    self.dispatcher.wake()
                if not self._dirty.is_set():
                    break
        finally:
            self._sweeping.clear()
        return ids

    def run_health(self) -> None:
        if not self.leadership.leading:
            return
        try:
            self.health.run()
        except ProberError as exc:  # the prober itself failed: record nothing rather than false verdicts
            log.warning("health sweep skipped", extra={"error": str(exc)})

    def run_metrics(self) -> None:
        """metrics-collect: one sample of every replica and app (leader only; a failure skips one sample),
        then the autoscaler's fast path: a surge in the fresh sample scales out now, not at the next round."""
        if self.leadership.leading and self.metrics.run() is not None:
            self.autoscaler.run(fast=True)

    def run_autoscale(self) -> None:
        if self.leadership.leading:
            self.autoscaler.run()

    def _unhealthy(self, apps: set[str]) -> None:
        """Replicas crossed their failure threshold: repair their apps (unless backing off)."""
        if self.leadership.leading and enqueue_repairs(self.sessions, apps):
            self.dispatcher.wake()

    def run_cert_sweep(self) -> None:
        """cert-sweep: a `cert-issue` job for each `tls: auto` host without a valid certificate or due renewal."""
        if self.leadership.leading and self.certs.run():
            self.dispatcher.wake()

    def run_host_sweep(self) -> None:
        """host-sweep: lost hosts that are back get a `host-activate` job (controller/hosts.py)."""
        if self.hosts is not None and self.leadership.leading and self.hosts.run(self.leadership.fence()):
            self.dispatcher.wake()

    def _hosts_lost(self, addresses: frozenset[str]) -> None:
        """Hosts of the swarm whose replicas all fail while others answer: a `host-drain` job each (again after
        a minute at most, while the host stays lost), enqueued before the repairs of their replicas."""
        if not self.leadership.leading:
            return
        now = time.monotonic()
        due = sorted(a for a in addresses if now - self._drains.get(a, -DRAIN_AGAIN_SECONDS) >= DRAIN_AGAIN_SECONDS)
        if not due:
            return
        with self.sessions.begin() as session:
            for address in due:
                request_task(
                    session,
                    "host-drain",
                    lock=f"host:{address}",
                    args={"address": address, "why": "every replica probed there fails while other hosts answer"},
                    actor="health",
                )
        self._drains.update(dict.fromkeys(due, now))
        log.warning("hosts lost: draining them in Swarm", extra={"hosts": due})
        self.dispatcher.wake()

    def run_nginx(self) -> None:
        """nginx-render: the skeleton rendered and applied (reloads only when it changed), nginx running,
        and the current routing table served. Idempotent; also restarts an nginx that died."""
        if self.nginx is None or self.router is None or not self.leadership.leading:
            return
        try:
            if self.nginx.converge() or not self.router.confirmed():
                self.router.forget()
            self.router.sync()
        except (NginxError, TemporaryError) as exc:
            # logged once when it goes down, then once a minute (not every 5 s); the audit trail once
            self.components.report("nginx", False, f"not serving the current configuration: {exc}")
        else:
            self.components.report("nginx", True)
