"""`noop`: does nothing; measures the queue itself (bench/job_latency) and checks a controller end to end."""

from __future__ import annotations

from typing import Any

from orchestry.jobs.base import JobContext


def noop(ctx: JobContext) -> dict[str, Any]:
    return {"ok": True}
