"""The callables APScheduler stores, referenced as `orchestry.controller.periodic:<name>`.

APScheduler's job store keeps a textual reference to each function: these names must never move or be
renamed (a stored job whose function is gone is silently dropped). They take no arguments and find the
running controller through `current`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestry.controller.node import Controller

current: Controller | None = None

DISPATCH = "orchestry.controller.periodic:dispatch"
RECONCILE = "orchestry.controller.periodic:reconcile"
HEALTH = "orchestry.controller.periodic:health_sweep"
NGINX = "orchestry.controller.periodic:nginx_render"
METRICS = "orchestry.controller.periodic:metrics_collect"
AUTOSCALE = "orchestry.controller.periodic:autoscale"


def dispatch() -> None:
    """No longer scheduled (the dispatcher's own poll covers it: controller/dispatcher.py lists the wake paths);
    kept under its stored name for a job store written by an older version, until the leader removes the job."""
    if current is not None:
        current.dispatcher.wake()


def reconcile() -> None:
    if current is not None:
        current.run_reconcile()


def health_sweep() -> None:
    if current is not None:
        current.run_health()


def nginx_render() -> None:
    if current is not None:
        current.run_nginx()


def metrics_collect() -> None:
    if current is not None:
        current.run_metrics()


def autoscale() -> None:
    if current is not None:
        current.run_autoscale()
