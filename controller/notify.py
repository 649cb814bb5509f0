"""PostgreSQL LISTEN/NOTIFY: wakes the dispatcher the moment a job is committed on any node.

It needs its own autocommit connection outside the pool; notifications arrive at COMMIT. Polling stays
the fallback, so a lost connection costs latency, never a job.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions
from sqlalchemy.engine import URL

from orchestry.models.jobs import NOTIFY_CHANNEL

log = logging.getLogger("orchestry.notify")


class NotifyListener:
    def __init__(self, url: URL, on_notify: Callable[[], None]) -> None:
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestry-notify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        lost = False
        while not self._stop.is_set():
            conn = None
            try:
                conn = psycopg2.connect(self.dsn, connect_timeout=5)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
                lost = False
                while not self._stop.is_set():
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        if conn.notifies:
                            conn.notifies.clear()
                            self.on_notify()
            except psycopg2.Error as exc:
                # once per outage (the component probe reports the database); each retry only at debug level
                level = logging.DEBUG if lost else logging.WARNING
                log.log(level, "LISTEN connection lost; polling meanwhile", extra={"error": str(exc).strip()})
                lost = True
                self._stop.wait(1.0)
            finally:
                if conn is not None:
                    conn.close()
