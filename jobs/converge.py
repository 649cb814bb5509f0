"""Converge one app: observe its containers, plan with `workflows.converge`, act, and repeat until done.

Every app operation (deploy, scale, stop, delete, reconcile) is this loop; they differ only in the desired
state the API wrote before enqueueing them. Running it twice is harmless: the second run observes that
nothing is left to do. The job never sleeps: when the plan says wait (a replica draining, a new one not yet
healthy), it raises `Wait` and the dispatcher runs it again shortly. One exception: a wake from zero probes
its new replica for a few seconds (requests are held until it passes), rather than wait for the health sweep.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from orchestry.config.secretbox import SecretKeyError, load_box
from orchestry.jobs.base import JobContext, PermanentError, TemporaryError, Wait
from orchestry.jobs.pull_progress import ProgressSteps
from orchestry.jobs.replica_request import replica_request, secret_refs
from orchestry.models.apps import App, get_app, get_revision
from orchestry.models.base import utcnow
from orchestry.models.edge import bump_edge
from orchestry.models.events import recent_times
from orchestry.models.registries import sealed_credential
from orchestry.models.replicas import replicas_of, start_draining, sync_observed
from orchestry.models.secrets import ciphertexts
from orchestry.operations.registration import restore_revision
from orchestry.runtime.types import (
    ContainerFailed,
    EngineUnavailable,
    HostLister,
    ImageUnavailable,
    Observed,
    RegistryAuth,
    VolumeConflict,
)
from orchestry.workflows.converge import (
    NO_ROUTER,
    RUNNING_STATUSES,
    Container,
    Desired,
    Known,
    Plan,
    Routing,
    Seen,
    Stop,
    desired_of,
    leaving,
    plan_app,
    see,
)
from orchestry.workflows.health import replacement_backoff
from orchestry.workflows.hosts import leaving as host_leaving
from orchestry.workflows.registry import pull_summary, registry_of
from orchestry.workflows.revision import RevisionView, revision_view
from orchestry.workflows.rollout import on_failure, restore_after_failure
from orchestry.workflows.wake import WOKE_EVENT

log = logging.getLogger("orchestry.jobs")
MAX_ROUNDS = 100
WAKE_PROBE_SECONDS = 5.0  # a wake's job probes its new replica this long before waiting like any job
WAKE_PROBE_STEP = 0.05
REPLACED_EVENT = "replica.replaced"
HALTED_EVENT = "rollout.halted"  # a new revision did not become healthy (then: halt, or the rollback)
ROLLED_BACK_EVENT = "rollout.rolled_back"  # the automatic rollback converged: the restored revision serves


@dataclass(frozen=True)
class Target:
    """The desired state read from the database for one round, with what the database knows of each replica."""

    app_id: int | None
    status: str
    replicas: int
    revision: int
    spec_hash: str
    spec: dict[str, Any]
    rows: dict[str, Known] = field(default_factory=dict)
    replacements: tuple[datetime, ...] = ()

    view: RevisionView = field(default_factory=lambda: revision_view(None))

    @property
    def routed(self) -> bool:
        return self.view.routed

    @property
    def probed(self) -> bool:
        return self.view.probed

    @property
    def drain_seconds(self) -> float:
        return self.view.drain_seconds

    @property
    def grace_seconds(self) -> float:
        return self.view.grace_seconds


def read_target(session: Session, name: str) -> Target:
    app = get_app(session, name)
    if app is None:  # deleted, or an orphan: nothing of it should run
        return Target(None, "absent", 0, 0, "", {})
    rev = get_revision(session, app)
    desired = desired_of(app.status, app.desired_replicas, rev.content_hash if rev else "", app.restarts)
    rows = {r.name: Known(r.container_id, r.health, r.drain_started_at) for r in replicas_of(session, app.id)}
    replaced = tuple(recent_times(session, name, REPLACED_EVENT))
    return Target(
        app.id,
        app.status,
        desired.replicas,
        app.revision,
        desired.spec_hash,
        rev.spec if rev else {},
        rows,
        replaced,
        revision_view(rev.spec if rev else None),
    )


def observe(ctx: JobContext, name: str) -> list[Observed]:
    try:
        return ctx.runtime.list_replicas(ctx.settings.cluster_name, name)
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot observe the containers of {name}: {exc}") from None


def containers(observed: list[Observed], away: frozenset[str] = frozenset()) -> list[Container]:
    """The decision's view of each container; `away`: the hosts (node ids) being drained."""
    return [
        Container(
            o.name,
            o.id,
            o.slot,
            o.spec_hash,
            o.running,
            f"{o.host}:{o.port}" if o.port else None,
            evicted=o.node is not None and o.node in away,
        )
        for o in observed
    ]


def hosts_leaving(ctx: JobContext, observed: list[Observed]) -> frozenset[str]:
    """The hosts (node ids) replicas must move off (workflows/hosts.py leaving): read only when a replica runs
    on a host of a swarm, one request to its manager a round."""
    runtime = ctx.runtime
    if not any(o.node for o in observed) or not isinstance(runtime, HostLister):
        return frozenset()
    try:
        return frozenset(n.id for n in runtime.nodes() if host_leaving(n.view()))
    except EngineUnavailable as exc:
        raise TemporaryError(f"cannot list the hosts: {exc}") from None


def routing_now(ctx: JobContext, target: Target, found: list[Container]) -> Routing:
    """What this node's nginx serves for the app, and what is still open to its leaving replicas."""
    if ctx.router is None:
        return NO_ROUTER
    serving = ctx.router.serving(ctx.app_name or "") if target.routed else None
    return Routing(serving, {a: ctx.router.in_flight(a) for a in leaving(found, target.rows)})


def seen(ctx: JobContext, target: Target, observed: list[Observed], now: datetime) -> list[Seen]:
    """Observe what nginx says, then decide what the planner sees (`workflows.converge.see`, pure)."""
    found = containers(observed, hosts_leaving(ctx, observed))
    return see(
        found,
        target.rows,
        owned=target.app_id is not None,
        probed=target.probed,
        drain_seconds=target.drain_seconds,
        routing=routing_now(ctx, target, found),
        router=ctx.router is not None,
        now=now,
    )


def _rows(observed: list[Observed]) -> list[dict[str, object]]:
    return [
        {
            "name": o.name,
            "slot": o.slot,
            "revision": o.revision,
            "container_id": o.id,
            "host": o.host,
            "host_name": o.node_name,
            "port": o.port,
            "state": o.state,
            "started_at": o.started_at,
            "ports": {str(private): public for private, public in o.ports},
        }
        for o in observed
    ]


def converge(ctx: JobContext) -> dict[str, Any]:
    name = ctx.app_name
    assert name, "app jobs carry the app's name"
    started: list[str] = []
    stopped: list[str] = []
    rolled_back: dict[str, Any] | None = None
    for _ in range(MAX_ROUNDS):
        with ctx.sessions.begin() as session:
            target = read_target(session, name)
        observed = observe(ctx, name)
        if target.app_id is not None:
            ctx.fence.check()
            with ctx.sessions.begin() as session:
                sync_observed(session, target.app_id, _rows(observed))
        now = utcnow()
        backoff = replacement_backoff(target.replacements, now)
        desired = Desired(target.replicas, target.spec_hash, replace_unhealthy=backoff is None)
        plan = plan_app(desired, seen(ctx, target, observed, now))
        if plan.done:
            result = _finish(ctx, target, observed, started, stopped)
            if rolled_back:
                _rolled_back(ctx, rolled_back)
            return {**result, "rolled_back": rolled_back} if rolled_back else result
        if plan.halt:
            _stop(ctx, target, plan.stops, stopped)
            _halted(ctx, target, plan.halt, rolled_back)
            if rolled_back is None and on_failure(target.spec) == "rollback":
                rolled_back = _roll_back(ctx, target, observed, plan.halt)
                if rolled_back is not None:
                    continue  # the next rounds converge to the restored revision, health-gated as ever
            if target.app_id is not None:  # the app fails now: leave its replica rows true to what runs
                with ctx.sessions.begin() as session:
                    sync_observed(session, target.app_id, _rows(observe(ctx, name)))
            raise PermanentError(plan.halt)
        if plan.wait and not (plan.starts or plan.drains or plan.stops):
            if _probe_for_wake(ctx, name):
                continue  # in rotation now: the next round finds the plan done
            raise Wait(plan.wait + (f"; replacing unhealthy replicas backs off for {backoff}" if backoff else ""))
        _drain(ctx, target, plan.drains)
        _stop(ctx, target, plan.stops, stopped)
        _start(ctx, target, plan, started)
    raise TemporaryError(f"{name} did not converge in {MAX_ROUNDS} rounds")


def _halted(ctx: JobContext, target: Target, why: str, rolled_back: dict[str, Any] | None) -> None:
    """The event `rollout.halted`: a new revision's replicas did not become healthy. `then` says what follows:
    `rollback` (onFailure: rollback, and a revision to go back to), else `halt` (the job fails, the old
    revision keeps serving)."""
    then = "rollback" if rolled_back is None and on_failure(target.spec) == "rollback" else "halt"
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        ctx.event(
            session,
            HALTED_EVENT,
            f"rollout of {ctx.app_name} revision {target.revision} halted: {why}",
            revision=target.revision,
            reason=why,
            on_failure=then,
            kind=ctx.kind,
        )


def _rolled_back(ctx: JobContext, rolled_back: dict[str, Any]) -> None:
    """The event `rollout.rolled_back`: the automatic rollback converged; the restored revision serves."""
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        ctx.event(
            session,
            ROLLED_BACK_EVENT,
            f"rollout of {ctx.app_name} revision {rolled_back['from']} rolled back: revision "
            f"{rolled_back['revision']} (restoring revision {rolled_back['restored']}) serves",
            **rolled_back,
        )


def _roll_back(ctx: JobContext, target: Target, observed: list[Observed], why: str) -> dict[str, Any] | None:
    """`rollout.onFailure: rollback`: put back the revision the old replicas still run, as a new revision
    that records it (`restored_from`). None when there is nothing to go back to (no old replica runs, or
    the app changed meanwhile): the rollout halts as with `onFailure: halt`."""
    old = [o.revision for o in observed if o.running and o.spec_hash != target.spec_hash]
    restore = restore_after_failure(old, target.revision)
    if restore is None or target.app_id is None:
        return None
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        app = session.get(App, target.app_id)
        if app is None or app.revision != target.revision or app.status not in RUNNING_STATUSES:
            return None
        rev = get_revision(session, app, restore)
        if rev is None:
            return None
        number = restore_revision(session, app, rev, actor=f"job:{ctx.job_id}", reason=f"rollout halted: {why}")
    ctx.step(f"rollout of revision {target.revision} halted", status="failed", reason=why)
    ctx.step(f"roll back to revision {restore}", revision=number, reason="rollout.onFailure: rollback")
    return {"from": target.revision, "restored": restore, "revision": number, "reason": why}


def _drain(ctx: JobContext, target: Target, drains: tuple[Stop, ...]) -> None:
    """Take replicas out of rotation; they stop in a later round, once nginx no longer sends them traffic."""
    if not drains or target.app_id is None:
        return
    ctx.fence.check()
    names = [d.name for d in drains]
    with ctx.sessions.begin() as session:
        start_draining(session, target.app_id, names, utcnow())
        for d in drains:
            if d.reason.startswith("unhealthy"):
                ctx.event(
                    session, REPLACED_EVENT, f"replica {d.name} is unhealthy and is being replaced", replica=d.name
                )
    for d in drains:
        ctx.step(f"drain {d.name}", reason=d.reason)
    if ctx.router is not None and target.routed:
        ctx.router.sync()


def _stop(ctx: JobContext, target: Target, stops: tuple[Stop, ...], stopped: list[str]) -> None:
    if not stops:
        return
    ctx.fence.check()
    grace = 0.0 if ctx.args.get("force") else target.grace_seconds

    def stop_one(stop: Stop) -> None:
        if grace >= 1:  # SIGTERM now; an image whose PID 1 ignores it waits the whole grace period (`init: true`)
            ctx.step(f"stopping {stop.name} (SIGKILL in {grace:g} s)", status="running", reason=stop.reason)
        try:
            ctx.runtime.stop_replica(ctx.settings.cluster_name, stop.name, grace)
        except (EngineUnavailable, ContainerFailed) as exc:
            raise TemporaryError(f"stopping {stop.name} failed: {exc}") from None
        ctx.step(f"stop {stop.name}", reason=stop.reason)
        stopped.append(stop.name)

    with ThreadPoolExecutor(max_workers=min(16, len(stops))) as pool:
        list(pool.map(stop_one, stops))


def _start(ctx: JobContext, target: Target, plan: Plan, started: list[str]) -> None:
    if not plan.starts:
        return
    auth = _pull_image(ctx, target.view.image)
    secrets = _secret_values(ctx, secret_refs(target.spec))
    ctx.fence.check()
    failures: list[Exception] = []

    def start_one(slot: int, reason: str) -> None:
        req = replica_request(
            cluster=ctx.settings.cluster_name,
            spec=target.spec,
            slot=slot,
            revision=target.revision,
            spec_hash=target.spec_hash,
            replicas=target.replicas,
            secrets=secrets,
        )
        req = dataclasses.replace(req, registry_auth=auth)
        if _wake_of(ctx) is not None:  # requests are held: no settle, the wake probes it at once
            req = dataclasses.replace(req, settle=0.0)
        try:
            obs = ctx.runtime.start_replica(req)
        except (EngineUnavailable, ContainerFailed, ImageUnavailable, VolumeConflict) as exc:
            ctx.step(f"start {req.name}", status="failed", reason=reason, error=str(exc))
            failures.append(exc)
            return
        ctx.step(
            f"start {req.name}",
            reason=reason,
            container=obs.id[:12],
            address=f"{obs.host}:{obs.port}" if obs.port else None,
        )
        started.append(req.name)

    with ThreadPoolExecutor(max_workers=min(16, len(plan.starts))) as pool:
        list(pool.map(lambda s: start_one(s.slot, s.reason), plan.starts))
    permanent = [f for f in failures if isinstance(f, ImageUnavailable | VolumeConflict)]
    if permanent:
        raise PermanentError(str(permanent[0]))
    if failures:
        # A replica that exits at once may have lost a race (its name, its port) or be broken for good:
        # retry with backoff, and let the job's attempt limit turn a broken one into a failed app.
        raise TemporaryError(f"replica failed to start: {failures[0]}")
    if ctx.router is not None and target.routed and not target.probed:
        ctx.router.sync()  # no health check: a running replica joins the table at once


def _pull_image(ctx: JobContext, image: str) -> RegistryAuth | None:
    """The image present on the engine, pulled with the credentials stored for its registry when there are
    some; those credentials, for the starts (a Swarm node pulls with them). The pull shows as a step as it
    begins and as it ends (layers, bytes, seconds), or fails the job at once: a missing image or refused
    credentials will not heal by retrying. While it runs, its progress is a step at most once a second
    (jobs/pull_progress.py). An image already on the engine makes no step."""
    auth = _registry_auth(ctx, image)
    server = registry_of(image)
    progress = ProgressSteps(image, ctx.step, registry=server, username=auth.username if auth else None)
    try:
        pulled = ctx.runtime.ensure_image(image, auth, progress.began, progress)
    except ImageUnavailable as exc:
        ctx.step(f"pull {image}", status="failed", registry=server, error=str(exc))
        raise PermanentError(str(exc)) from None
    except EngineUnavailable as exc:
        raise TemporaryError(str(exc)) from None
    finally:
        progress.close()
    if pulled is not None:
        ctx.step(
            f"pull {image}",
            registry=server,
            summary=pull_summary(pulled.layers, pulled.downloaded, pulled.bytes, pulled.seconds),
            layers=pulled.layers,
            downloaded=pulled.downloaded,
            bytes=pulled.bytes,
            seconds=pulled.seconds,
            digest=pulled.digest,
        )
    return auth


def _registry_auth(ctx: JobContext, image: str) -> RegistryAuth | None:
    """The credentials `orchestry registry login` stored for the image's registry, opened; None without."""
    server = registry_of(image)
    with ctx.sessions.begin() as session:
        stored = sealed_credential(session, server)
    if stored is None:
        return None
    username, sealed = stored
    try:
        return RegistryAuth(server, username, load_box(ctx.settings).open(sealed))
    except SecretKeyError as exc:
        raise PermanentError(f"registry {server}: {exc}") from None


def _secret_values(ctx: JobContext, refs: dict[str, str]) -> dict[str, str]:
    """The decrypted values the replicas' env reads. A missing secret fails the job, naming it (a retry
    cannot help until someone sets it). Values go to Docker only, never to steps, events or logs."""
    if not refs:
        return {}
    with ctx.sessions.begin() as session:
        sealed = ciphertexts(session, sorted(set(refs.values())))
    missing = sorted({(secret, var) for var, secret in refs.items() if secret not in sealed})
    if missing:
        named = ", ".join(f"{secret} (env {var})" for secret, var in missing)
        raise PermanentError(f"secret not found: {named}; set it with `orchestry secret set NAME`")
    try:
        box = load_box(ctx.settings)
        return {name: box.open(token) for name, token in sealed.items()}
    except SecretKeyError as exc:
        raise PermanentError(str(exc)) from None


def _volumes_of_deleted(ctx: JobContext, target: Target) -> tuple[list[str], list[str]]:
    """(removed, kept): a deleted app's volumes go only when asked (`delete --volumes`); otherwise they are
    kept, and listed in the app.deleted event. Running twice is harmless: removed volumes are not listed."""
    cluster, name = ctx.settings.cluster_name, ctx.app_name or ""
    try:
        if ctx.args.get("volumes"):
            removed = ctx.runtime.remove_volumes(cluster, name)
            if removed:
                ctx.step("remove volumes", volumes=removed)
            return removed, []
        return [], ctx.runtime.list_volumes(cluster, name)
    except (EngineUnavailable, VolumeConflict) as exc:
        raise TemporaryError(f"volumes of {name}: {exc}") from None


def _wake_of(ctx: JobContext) -> dict[str, Any] | None:
    """The wake a scale job carries (requests held by nginx, see workflows/wake.py), or None."""
    wake = ctx.args.get("wake")
    return wake if isinstance(wake, dict) else None


def _probe_for_wake(ctx: JobContext, name: str) -> bool:
    """A wake from zero: requests are held until a replica passes its health check, so probe the app now and
    again every WAKE_PROBE_STEP (up to WAKE_PROBE_SECONDS) instead of waiting for the health sweep's next
    tick. True once a replica turned healthy (the sweep's recording put it in the routing table)."""
    if _wake_of(ctx) is None or ctx.health is None:
        return False
    deadline = time.monotonic() + WAKE_PROBE_SECONDS
    while time.monotonic() < deadline:
        ctx.fence.check()
        report = ctx.health.check_app(name)
        if any(after == "healthy" for _, _, after in report.get("transitions", [])):
            return True
        time.sleep(WAKE_PROBE_STEP)
    return False


def _woke(ctx: JobContext, session: Session, name: str, wake: dict[str, Any], replicas: int) -> None:
    """A wake from zero converged (its replica is healthy and routed next): `app.woke`, with the latency
    from the first held request (the wake-latency histogram reads it)."""
    try:
        since = datetime.fromisoformat(str(wake.get("since")))
    except ValueError:
        return
    latency = max(0.0, (utcnow() - since).total_seconds())
    ctx.event(
        session,
        WOKE_EVENT,
        f"app {name} woke: {replicas} replica(s) serving, {latency:.2f} s after its first held request "
        f"(on {wake.get('node')})",
        latency_seconds=round(latency, 3),
        node=wake.get("node"),
        held=wake.get("held"),
    )


def _finish(
    ctx: JobContext, target: Target, observed: list[Observed], started: list[str], stopped: list[str]
) -> dict[str, Any]:
    result = {"replicas": len(observed), "revision": target.revision, "started": started, "stopped": stopped}
    if target.app_id is None:
        return result
    removed, kept = _volumes_of_deleted(ctx, target) if target.status == "deleting" else ([], [])
    ctx.fence.check()
    with ctx.sessions.begin() as session:
        app = session.get(App, target.app_id)
        if app is None:
            return result
        if app.status == "deleting":
            session.delete(app)
            bump_edge(session)  # its routes leave every node's nginx
            message = f"app {app.name} deleted; its containers are gone"
            if removed:
                message += f"; volumes removed: {', '.join(removed)}"
            if kept:
                message += f"; volumes kept: {', '.join(kept)} (`delete --volumes` removes them)"
            ctx.event(
                session, "app.deleted", message, revision=app.revision, volumes_removed=removed, volumes_kept=kept
            )
            result.update(deleted=True, volumes_removed=removed, volumes_kept=kept)
        elif app.status in RUNNING_STATUSES:
            changed = app.status != "running" or started or stopped
            app.status, app.status_reason = "running", None
            if changed:
                ctx.event(
                    session,
                    "app.converged",
                    f"app {app.name}: {len(observed)} replica(s) of revision {app.revision} serving",
                    replicas=len(observed),
                    started=started,
                    stopped=stopped,
                )
            wake = _wake_of(ctx)
            if wake is not None and observed and app.desired_replicas > 0:  # `started` may be an earlier run's
                _woke(ctx, session, app.name, wake, len(observed))
        elif app.status in ("stopped", "registered") and stopped:
            ctx.event(session, "app.stopped", f"app {app.name} stopped", stopped=stopped)
    if ctx.router is not None and target.routed and (started or stopped):
        ctx.router.sync()
    return result
