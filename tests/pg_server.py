"""A throwaway PostgreSQL server for the tests, run as the `postgres` user (it refuses root).

Used when ORCHESTRY_TEST_DB=postgresql and no ORCHESTRY_TEST_PG_URL points at a running server.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from orchestry.testapp.ports import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's `postgresql` package")
    return found[-1]


@dataclass
class PgServer:
    directory: str
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start(self) -> None:
        data = os.path.join(self.directory, "data")
        subprocess.run(
            self._as_postgres(_bin("initdb"), "-D", data, "--auth=trust", "--no-sync", "-U", "postgres", "-E", "UTF8"),
            check=True,
            capture_output=True,
        )
        opts = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._as_postgres(
                _bin("pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(self.directory, "log"), "-w", "start"
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(_bin("pg_ctl"), "-D", os.path.join(self.directory, "data"), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_server() -> PgServer:
    directory = tempfile.mkdtemp(prefix="orchestry-pg-")
    os.chmod(directory, 0o777)
    for attempt in range(3):
        server = PgServer(directory, free_port())
        try:
            server.start()
            return server
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            shutil.rmtree(os.path.join(directory, "data"), ignore_errors=True)
            time.sleep(0.5)
    raise AssertionError("unreachable")
