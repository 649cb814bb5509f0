"""A SIGTERM during an incident (issue 11): the controller stops cleanly, and says why in one line each,
without a traceback. The incident is real: the controller's own PostgreSQL server is stopped under it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import start_server, wait_for
from pg_server import start_server as start_pg


@pytest.mark.parametrize(
    ("nginx", "down_for"),
    [("off", 4.0), ("managed", 0.3)],  # stopped once the outage is known; and while still leading, with nginx
)
def test_sigterm_while_the_database_is_down_logs_no_traceback(tmp_path: Path, nginx: str, down_for: float) -> None:
    pg = start_pg()
    stopped = False
    try:
        server = start_server(pg.admin_url, tmp_path, {"ORCHESTRY_NGINX": nginx})
        try:
            wait_for(lambda: "leading: scheduler running" in server.log(), 20)
            pg.stop()
            stopped = True
            time.sleep(down_for)  # the lease lapses, the leader steps down, its jobs fail on the database meanwhile
            assert server.http.get("/health").status_code == 503
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running 30 s after SIGTERM:\n{server.log()}") from None
        finally:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
            server.http.close()
    finally:
        if not stopped:
            pg.stop()
    log = server.log()
    assert code == 0, log
    assert "Traceback" not in log, log
    assert "shutting down" in log
    assert log.count("database is down") <= 1, log
    try:
        httpx.get(server.url + "/health", timeout=1)
        raise AssertionError("still answering after SIGTERM")
    except httpx.TransportError:
        pass


def test_the_scheduler_thread_survives_a_database_error_writing_a_next_run_time() -> None:
    """APScheduler catches a failed read of its job store but not a failed write: seen in the SIGTERM test's
    incident as "Exception in thread APScheduler", after which the node never ran a periodic job again."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from sqlalchemy.exc import OperationalError

    from orchestry.controller.leadership import FencedScheduler

    class LostDatabase(MemoryJobStore):  # type: ignore[misc]
        def update_job(self, job: Any) -> None:
            raise OperationalError("UPDATE apscheduler_jobs", {}, Exception("server closed the connection"))

    runs: list[float] = []
    scheduler = FencedScheduler(
        lambda: True, jobstores={"default": LostDatabase()}, executors={"default": ThreadPoolExecutor(2)}
    )
    scheduler.add_job(lambda: runs.append(time.monotonic()), "interval", seconds=0.2, id="tick")
    scheduler.start()
    try:
        time.sleep(2.5)
        assert scheduler._thread.is_alive()
        assert len(runs) >= 2  # it kept scheduling after the failed writes
    finally:
        scheduler.shutdown(wait=False)
