"""`health-check`: probe every replica of one app now (`POST /api/v1/apps/<name>/health/check`)."""

from __future__ import annotations

from typing import Any

from orchestry.jobs.base import JobContext, PermanentError


def health_check(ctx: JobContext) -> dict[str, Any]:
    if ctx.health is None:
        raise PermanentError("this controller runs no health checks")
    assert ctx.app_name
    return ctx.health.check_app(ctx.app_name)
