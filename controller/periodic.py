"""The sweeps: the leader's periodic callables, which APScheduler stores as `orchestry.controller.periodic:<name>`.

A sweep looks for work (drift, due probes, samples to take, apps to size, a config to render) and enqueues
jobs (queued operations, `jobs/`) where something must change; it never starts or stops a container itself.

APScheduler's job store keeps a textual reference to each function: these names must never move or be
renamed (a stored job whose function is gone is silently dropped). They take no arguments and find the
running controller through `current`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from orchestry.controller.node import Controller

current: Controller | None = None
log = logging.getLogger("orchestry.controller")

DISPATCH = "orchestry.controller.periodic:dispatch"
RECONCILE = "orchestry.controller.periodic:reconcile"
HEALTH = "orchestry.controller.periodic:health_sweep"
NGINX = "orchestry.controller.periodic:nginx_render"
METRICS = "orchestry.controller.periodic:metrics_collect"
AUTOSCALE = "orchestry.controller.periodic:autoscale"
CERTS = "orchestry.controller.periodic:cert_sweep"
HOSTS = "orchestry.controller.periodic:host_sweep"


def dispatch() -> None:
    """No longer scheduled (the dispatcher's own poll covers it: controller/dispatcher.py lists the wake paths);
    kept under its stored name for a job store written by an older version, until the leader removes the job."""
    if current is not None:
        current.dispatcher.wake()


def reconcile() -> None:
    if current is not None:
        _quietly("reconcile", current.run_reconcile)


def health_sweep() -> None:
    if current is not None:
        _quietly("health_sweep", current.run_health)


def nginx_render() -> None:
    if current is not None:
        _quietly("nginx_render", current.run_nginx)


def metrics_collect() -> None:
    if current is not None:
        _quietly("metrics_collect", current.run_metrics)


def autoscale() -> None:
    if current is not None:
        _quietly("autoscale", current.run_autoscale)


def cert_sweep() -> None:
    if current is not None:
        _quietly("cert_sweep", current.run_cert_sweep)


def host_sweep() -> None:
    if current is not None:
        _quietly("host_sweep", current.run_host_sweep)


def _quietly(name: str, run: Callable[[], object]) -> None:
    """A database outage is an incident, not a bug: no traceback from APScheduler. The component probe
    reports the outage (once), and the job runs again at its next interval."""
    try:
        run()
    except SQLAlchemyError as exc:
        log.debug("periodic job skipped: the database did not answer", extra={"job": name, "error": _line(exc)})


def _line(exc: SQLAlchemyError) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
