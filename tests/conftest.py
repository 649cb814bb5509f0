"""Shared fixtures: a fresh database per test (SQLite or PostgreSQL), and a real `orchestry serve` process.

ORCHESTRY_TEST_DB selects the database: `sqlite` (default) or `postgresql`. For PostgreSQL the tests start
a throwaway server (as the `postgres` user) unless ORCHESTRY_TEST_PG_URL names an admin URL of one.
Each test gets its own database, copied from a template that was migrated once per worker.

Unit and live: a test that uses a live fixture (LIVE_FIXTURES below: Docker, nginx, a started server; a module
may name more of its own in a `LIVE_FIXTURES` tuple) is marked `live` at collection, so `-m "not live"` (make
test-unit) is the fast subset. A missing dependency fails a live test with a clear message (require_docker,
require_nginx): it never skips, so CI without Docker or nginx is red, not quietly green.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.models.schema import upgrade

DB_KIND = os.environ.get("ORCHESTRY_TEST_DB", "sqlite")
TEST_SECRET_KEY = "3uMV_pNV3YvqfwTVqMpAC5DRVXCPvsPsi5bWEsPx_Zg="  # a Fernet key for test servers only
if DB_KIND not in ("sqlite", "postgresql"):
    raise SystemExit(f"ORCHESTRY_TEST_DB must be sqlite or postgresql, not {DB_KIND!r}")
LIVE_JOBS = text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
TABLES = (
    "app_request_histograms",
    "metric_samples",
    "scaling_decisions",
    "replicas",
    "app_revisions",
    "apps",
    "jobs",
    "events",
    "api_tokens",
    "secrets",
    "certificates",
    "acme_challenges",
    "acme_accounts",
    "registry_credentials",
    "webhook_deliveries",
    "webhooks",
)  # not leader_lease, controller_nodes, routing_state: the live server keeps leading and routing across tests

for _key in [k for k in os.environ if k.startswith("ORCHESTRY_") and not k.startswith("ORCHESTRY_TEST_")]:
    del os.environ[_key]


def pytest_report_header() -> str:
    return f"orchestry test database: {DB_KIND}"


# Fixtures that reach Docker, nginx or a started `orchestry serve`: a test using any of them (directly, through
# another fixture, or by `pytest.mark.usefixtures`) is marked `live`; so is a test that calls start_server itself.
LIVE_FIXTURES = ("live_server", "live", "testapp_image", "docker_required", "nginx_required")
LIVE_CALLS = ("start_server",)


def live_fixtures_of(module: Any) -> frozenset[str]:
    return frozenset(LIVE_FIXTURES) | frozenset(getattr(module, "LIVE_FIXTURES", ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        code = getattr(getattr(item, "function", None), "__code__", None)
        calls = set(code.co_names) if code is not None else set()
        if names & live_fixtures_of(module) or calls & set(LIVE_CALLS):
            item.add_marker(pytest.mark.live)


def nginx_missing() -> list[str]:
    """What Orchestry's nginx needs and this machine lacks (Debian's nginx and its Lua module)."""
    from orchestry.nginx.render import DEFAULT_MODULES

    return [m for m in ("/usr/sbin/nginx", *DEFAULT_MODULES) if not Path(m).exists()]


def require_nginx() -> None:
    """Fails the test (never skips) when nginx or its Lua module is missing."""
    missing = nginx_missing()
    if missing:
        pytest.fail(
            f"this test needs Debian's nginx with the Lua module (missing: {', '.join(missing)}); "
            "apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-cjson",
            pytrace=False,
        )


def require_docker() -> Any:
    """The Docker client, or the test fails (never skips) saying that no engine answers."""
    try:
        client = docker_client()
        client.ping()
    except Exception as exc:  # DockerException, or the transport's own error for a bogus DOCKER_HOST
        pytest.fail(f"this test needs a Docker engine and none answers ({exc}); start dockerd", pytrace=False)
    return client


@pytest.fixture(scope="session")
def docker_required() -> Any:
    return require_docker()


@pytest.fixture(scope="session")
def nginx_required() -> None:
    require_nginx()


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reads or writes the real user's config or data directory."""
    home = tmp_path_factory.mktemp("home")
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_DATA_HOME"] = str(home / "data")


class Databases:
    """Makes fresh databases: empty ones, or copies of a migrated template."""

    def __init__(self, workdir: Path, admin_url: str | None) -> None:
        self.workdir = workdir
        self.admin_url = admin_url
        self._template: str | None = None

    def _admin(self):  # type: ignore[no-untyped-def]
        assert self.admin_url
        return create_engine(self.admin_url, isolation_level="AUTOCOMMIT")

    def empty(self) -> str:
        name = "t" + uuid.uuid4().hex[:12]
        if self.admin_url is None:
            return f"sqlite:///{self.workdir / (name + '.db')}"
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def migrated(self) -> str:
        if self._template is None:
            self._template = self.empty()
            engine = make_engine(self._template)
            upgrade(engine)
            engine.dispose()
        if self.admin_url is None:
            copy = self.workdir / ("t" + uuid.uuid4().hex[:12] + ".db")
            shutil.copyfile(make_url(self._template).database or "", copy)
            return f"sqlite:///{copy}"
        name = "t" + uuid.uuid4().hex[:12]
        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(self._template).database}"'))
        engine.dispose()
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    workdir = tmp_path_factory.mktemp("db")
    if DB_KIND == "sqlite":
        yield Databases(workdir, None)
        return
    given = os.environ.get("ORCHESTRY_TEST_PG_URL")
    if given:
        yield Databases(workdir, given)
        return
    from pg_server import start_server

    server = start_server()
    try:
        yield Databases(workdir, server.admin_url)
    finally:
        server.stop()


@pytest.fixture
def db_url(databases: Databases) -> str:
    """A fresh database at the schema's head."""
    return databases.migrated()


@pytest.fixture
def empty_db_url(databases: Databases) -> str:
    return databases.empty()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a fresh database at the schema's head, disposed after the test."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh database at the schema's head (the engine is disposed after the test). Its own
    engine, not the `engine` fixture: two test modules name their Docker engine fixture `engine`."""
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def backends() -> Iterator[Any]:
    """Tiny HTTP backends by name (test_nginx_live.Backends), each started on first use, closed after the test."""
    from test_nginx_live import Backends

    started = Backends()
    yield started
    for backend in started.values():
        backend.close()


@contextmanager
def running_nginx(directory: Path, *, tls: bool = False) -> Iterator[Any]:
    """Orchestry's own nginx (an NginxManager on test_nginx_live.make_settings, TLS on a port of its own when
    `tls`) started under `directory`, stopped and closed after; fresh ports when another process took one."""
    from test_nginx_live import make_settings

    from orchestry.nginx.manager import NginxError, NginxManager
    from orchestry.testapp.ports import free_port

    def settings(name: str) -> Any:
        return make_settings(directory / name, **({"tls_port": free_port()} if tls else {}))

    manager = NginxManager(settings("nginx"))
    for attempt in range(3):  # another process may take a "free" port before nginx binds it
        try:
            manager.start()
            break
        except NginxError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
            manager = NginxManager(settings(f"nginx{attempt}"))
    try:
        yield manager
    finally:
        manager.stop()
        manager.close()
        assert not manager.running()


@pytest.fixture
def nginx(tmp_path: Path, nginx_required: None) -> Iterator[Any]:
    """A started nginx of its own for the test (running_nginx)."""
    with running_nginx(tmp_path) as manager:
        yield manager


def orchestry_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestry", *args]


class Box:
    """One container from Docker's list: what the tests read of it, and kill/remove."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.id: str = summary["Id"]
        self.name: str = summary["Names"][0].lstrip("/")
        self.status: str = summary["State"]
        self.labels: dict[str, str] = summary["Labels"] or {}
        ports = [p for p in summary.get("Ports", []) if p.get("PublicPort")]
        self.port: int | None = ports[0]["PublicPort"] if ports else None

    def kill(self) -> None:
        docker_client().api.kill(self.id)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            docker_client().api.remove_container(self.id, force=True)

    def inspect(self) -> dict[str, Any]:
        return docker_client().api.inspect_container(self.id)


@dataclass
class LiveServer:
    """A real `orchestry serve` process on a port of its own."""

    url: str
    db_url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def cli(
        self,
        *args: str,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `orchestry` command against this server."""
        return subprocess.run(
            orchestry_cmd(*args),
            input=stdin.decode() if stdin else None,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=60,
        )

    @property
    def cluster(self) -> str:
        return self.env["ORCHESTRY_CLUSTER_NAME"]

    def containers(self, app: str | None = None) -> list[Box]:
        """This server's containers as Docker lists them (one call: no per-container inspect that could race
        with a removal)."""
        labels = [f"org.orchestry.cluster={self.cluster}"] + ([f"org.orchestry.app={app}"] if app else [])
        return [Box(c) for c in docker_client().api.containers(all=True, filters={"label": labels})]

    def remove_containers(self) -> None:
        for container in self.containers():
            container.remove()

    def wait_job(self, job_id: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.http.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return job
            time.sleep(0.1)

    def reset(self) -> None:
        """Nothing left of the previous test: its apps, containers, and the jobs they caused.

        Removing containers wakes the reconcile loop, which may start a job for an app still in the database;
        such a job must end before the rows go, or (SQLite reuses the highest deleted id) its steps would land
        in the next test's first job."""
        engine = make_engine(self.db_url)
        try:
            self._delete_rows(engine)
            self.remove_containers()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    live = conn.execute(LIVE_JOBS).scalar()
                if not live:
                    break
                time.sleep(0.1)
            self._delete_rows(engine)
        finally:
            engine.dispose()

    @staticmethod
    def _delete_rows(engine: Any) -> None:
        with engine.begin() as conn:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    db_url: str, workdir: Path, extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> LiveServer:
    from pg_server import free_port

    port = free_port()
    env = {
        **os.environ,
        "ORCHESTRY_DATABASE_URL": db_url,
        "ORCHESTRY_URL": f"http://127.0.0.1:{port}",
        "ORCHESTRY_DATA_DIR": str(workdir),
        "ORCHESTRY_CLUSTER_NAME": "t" + uuid.uuid4().hex[:8],
        "ORCHESTRY_PROXY_PORT": str(free_port()),
        "ORCHESTRY_NGINX_CONTROL_PORT": str(free_port()),
        "ORCHESTRY_PROXY_TLS_PORT": str(free_port()),
        "ORCHESTRY_NODE_ID": f"node-{port}",
        # PostgreSQL needs the secrets key set (the same on every node); SQLite generates one in the data dir.
        **({"ORCHESTRY_SECRET_KEY": TEST_SECRET_KEY} if DB_KIND != "sqlite" else {}),
        **(extra_env or {}),
    }
    log_path = workdir / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            orchestry_cmd("serve", "--port", str(port), *args), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = LiveServer(f"http://127.0.0.1:{port}", db_url, env, proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"orchestry serve exited with {proc.returncode}:\n{server.log()}")
        try:
            if server.http.get("/health").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    proc.wait()  # reaped here: an unreaped child is reported later, against whichever test runs then
    server.http.close()
    raise RuntimeError(f"orchestry serve did not answer within 30 s:\n{server.log()}")


def stop_server(server: LiveServer, *, remove_containers: bool = True) -> None:
    server.http.close()
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    if remove_containers:
        server.remove_containers()


_docker: Any = None


def docker_client() -> Any:
    global _docker
    if _docker is None:
        import docker

        _docker = docker.from_env()
    return _docker


@pytest.fixture(scope="session")
def testapp_image(docker_required: Any) -> str:
    """The local test image (built once per run, reused after)."""
    from orchestry.testapp.build import ensure_image

    ensure_image()
    return "orchestry-testapp:latest"


@pytest.fixture(scope="session")
def live_server(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory, testapp_image: str, nginx_required: None
) -> Iterator[LiveServer]:
    """One controller per test worker; the test image exists before it (any test may start a replica)."""
    server = start_server(databases.migrated(), tmp_path_factory.mktemp("live"))
    yield server
    stop_server(server)


@pytest.fixture
def live(live_server: LiveServer) -> LiveServer:
    """The shared server with an empty database, so each test starts from nothing."""
    live_server.reset()
    return live_server


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


HELLO = """\
# a comment that must survive in the raw document
apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  image: orchestry-testapp:latest
  ports:
    - containerPort: 8080
"""


# An image no engine has and no registry serves. Its name points at a registry on loopback that refuses every
# connection (port 9, discard): a pull fails at once without a DNS query or any packet leaving the machine,
# where a bare name would send the engine to Docker Hub.
MISSING_REGISTRY = "127.0.0.1:9"


def missing_image(name: str = "orchestry-no-such-image") -> str:
    return f"{MISSING_REGISTRY}/{name}:1"


def hello(name: str = "hello", image: str = "orchestry-testapp:latest", extra: str = "") -> str:
    """The test app's spec. Manual scaling unless `extra` brings a scaling section: a test that sets a replica
    count keeps it (in auto mode the autoscaler would bring an idle app down to minReplicas)."""
    manual = "" if "scaling:" in extra else "scaling:\n  mode: manual\n"
    return HELLO.format(name=name).replace("orchestry-testapp:latest", image) + extra + manual


def post(live: LiveServer, body: str | bytes, ctype: str = "application/yaml", **params: str) -> httpx.Response:
    return live.http.post("/api/v1/apps", content=body, headers={"Content-Type": ctype}, params=params)


def snapshot(live: LiveServer) -> dict[str, Any]:
    """Everything stored about apps, to prove that bad input changed nothing."""
    apps = live.http.get("/api/v1/apps").json()["apps"]
    out = {}
    for app in apps:
        name = app["name"]
        out[name] = (
            app["revision"],
            live.http.get(f"/api/v1/apps/{name}/spec").json()["content_hash"],
            len(live.http.get(f"/api/v1/apps/{name}/revisions").json()["revisions"]),
        )
    return out


def assert_error(resp: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "detail", "fields"}
    if error:
        assert body["error"] == error
    return body


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> float:
    """Seconds until predicate() was true; fails the test after `timeout`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


@contextmanager
def proxy_load(server: LiveServer, app: str, rps: float | None = None, posts: bool = False) -> Iterator[list[int]]:
    """Requests to `app` through `server`'s nginx from 4 threads until the block ends; yields [ok, failed].

    `rps`: about that many per second in all (else as fast as answers come); `posts`: half the threads send
    POST /echo (never retried by nginx once sent), the others GET /."""
    counts = [0, 0]
    stop = threading.Event()
    url = f"http://127.0.0.1:{server.env['ORCHESTRY_PROXY_PORT']}"

    def run(post: bool) -> None:
        with httpx.Client(base_url=url, timeout=10, headers={"Host": f"{app}.localhost"}) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    resp = client.post("/echo", content=b"x") if post else client.get("/")
                    ok = resp.status_code == 200
                except httpx.HTTPError:
                    ok = False
                counts[0 if ok else 1] += 1
                if rps is not None:
                    stop.wait(max(0.0, 4 / rps - (time.monotonic() - started)))

    threads = [threading.Thread(target=run, args=(posts and i % 2 == 1,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
