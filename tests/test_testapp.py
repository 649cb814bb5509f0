"""The `orchestry-testapp` image (testapp/): built locally, then exercised as a real container over HTTP."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker
import docker.errors
import httpx
import pytest
from docker.models.containers import Container

from orchestry.testapp.build import TAG, ensure_image

TEST_LABEL = {"org.orchestry.test": "1"}


@dataclass
class App:
    container: Container
    url: str

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    @property
    def hostname(self) -> str:
        return str(self.container.attrs["Config"]["Hostname"])

    def cpu_ns(self) -> int | None:
        """Total CPU time the container's cgroup has used, or None when the engine does not report it."""
        try:
            stats = self.container.stats(stream=False, one_shot=True)
            return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])
        except (KeyError, TypeError, ValueError, docker.errors.APIError):
            return None


@pytest.fixture(scope="module")
def client(docker_required: object) -> Iterator[docker.DockerClient]:
    engine = docker.from_env()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def image_id(client: docker.DockerClient) -> str:
    return ensure_image()


def _start(
    client: docker.DockerClient, started: list[Container], env: dict[str, str] | None = None, port: int = 8080
) -> App:
    container = client.containers.run(
        TAG, detach=True, environment=env or {}, labels=TEST_LABEL, ports={f"{port}/tcp": ("127.0.0.1", None)}
    )
    started.append(container)
    container.reload()
    host_port = container.ports[f"{port}/tcp"][0]["HostPort"]
    app = App(container, f"http://127.0.0.1:{host_port}")
    deadline = time.monotonic() + 15
    while True:  # the published port accepts at once; the server inside needs a moment
        try:
            if app.get("/").status_code == 200:
                return app
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            container.reload()
            raise AssertionError(f"test app never answered ({container.status}): {container.logs()!r}")
        time.sleep(0.05)


def _remove(started: list[Container]) -> None:
    for container in started:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture
def start_app(client: docker.DockerClient, image_id: str, request: pytest.FixtureRequest) -> Callable[..., App]:
    """Start a container of the test image; every one is removed when the test ends."""
    started: list[Container] = []
    request.addfinalizer(lambda: _remove(started))
    return lambda env=None, port=8080: _start(client, started, env, port)


@pytest.fixture(scope="module")
def shared_app(client: docker.DockerClient, image_id: str) -> Iterator[App]:
    """One container for the tests that change no state in it."""
    started: list[Container] = []
    try:
        yield _start(client, started, {"APP_NAME": "demo", "INSTANCE_IP": "10.1.2.3", "INSTANCE_PORT": "31234"})
    finally:
        _remove(started)


def test_second_ensure_image_reuses_the_build(image_id: str, client: docker.DockerClient) -> None:
    started = time.monotonic()
    assert ensure_image() == image_id
    assert time.monotonic() - started < 5
    image = client.images.get(TAG)
    assert image.id == image_id
    assert len(image.labels["org.orchestry.testapp.hash"]) == 64


def test_health_can_be_switched_to_failing_and_back(start_app: Callable[..., App]) -> None:
    app = start_app()
    resp = app.get("/health")
    assert (resp.status_code, resp.text) == (200, "ok\n")
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["connection"] == "close"
    assert app.get("/health/fail").status_code == 405  # only POST switches
    assert app.post("/health/fail").status_code == 200
    assert app.get("/health").status_code == 500
    assert app.get("/").status_code == 200  # only /health fails
    assert app.post("/health/ok").status_code == 200
    assert app.get("/health").status_code == 200
    assert app.post("/health", content=b'{"deep": true}').status_code == 200  # a POST probe with a body


def test_head_answers_headers_only(shared_app: App) -> None:
    resp = httpx.head(shared_app.url + "/health", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-length"] == "3"
    assert resp.content == b""


def test_root_and_any_path_name_the_replica(shared_app: App) -> None:
    for path in ("/", "/some/other/path?x=1"):
        resp = shared_app.get(path)
        assert resp.status_code == 200
        fields = dict(line.split("=", 1) for line in resp.text.splitlines())
        assert fields == {
            "hostname": shared_app.hostname,
            "instance_ip": "10.1.2.3",
            "instance_port": "31234",
            "app_name": "demo",
            "method": "GET",
            "path": path.split("?")[0],
        }
        assert resp.headers["x-served-by"] == shared_app.hostname
        assert int(resp.headers["content-length"]) == len(resp.content)


def test_echo_returns_the_headers_and_the_body(shared_app: App) -> None:
    body = b"hello \x00\xff world\n" + os.urandom(64 * 1024)
    resp = shared_app.post("/echo?q=1", content=body, headers={"X-Test": "abc"})
    assert resp.status_code == 200
    head, _, echoed = resp.content.partition(b"\n\n")
    assert echoed == body
    lines = head.decode().lower().splitlines()
    assert lines[0] == "post /echo?q=1 http/1.1"
    assert "x-test: abc" in lines
    assert f"content-length: {len(body)}" in lines


def test_env_lists_the_environment(shared_app: App) -> None:
    lines = shared_app.get("/env").text.splitlines()
    assert "APP_NAME=demo" in lines
    assert "PORT=8080" in lines


def test_burn_uses_cpu_for_about_the_time_asked(shared_app: App) -> None:
    before = shared_app.cpu_ns()
    started = time.monotonic()
    resp = shared_app.get("/burn", params={"ms": 300})
    elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert 0.25 <= elapsed < 3
    after = shared_app.cpu_ns()
    if before is not None and after is not None:
        # A busy loop, not a sleep: /slow's sleep of the same length beside it is the control. The loop runs for
        # wall time, so on a busy machine it gets less CPU (CI saw 76 ms of 300): the bound is loose, the
        # contrast is what tells.
        slow = shared_app.get("/slow", params={"ms": 300})
        assert slow.status_code == 200
        slept = shared_app.cpu_ns()
        assert slept is not None
        burned = after - before
        assert burned >= 30_000_000  # ns
        assert burned > 2 * (slept - after)


def test_slow_answers_after_about_the_time_asked(shared_app: App) -> None:
    started = time.monotonic()
    resp = shared_app.get("/slow", params={"ms": 300})
    assert resp.status_code == 200
    assert 0.25 <= time.monotonic() - started < 3


def test_twenty_concurrent_requests_all_succeed(shared_app: App) -> None:
    with (
        httpx.Client(timeout=10, limits=httpx.Limits(max_connections=20)) as http,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        responses = list(pool.map(lambda i: http.get(f"{shared_app.url}/req/{i}"), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert [f"path=/req/{i}" in r.text for i, r in enumerate(responses)] == [True] * 20


def test_health_delay_answers_503_first(start_app: Callable[..., App]) -> None:
    started = time.monotonic()
    app = start_app({"HEALTH_DELAY": "2"})
    assert app.get("/health").status_code == 503
    while (status := app.get("/health").status_code) == 503 and time.monotonic() - started < 15:
        time.sleep(0.1)
    assert status == 200
    assert time.monotonic() - started >= 1.9


def test_port_comes_from_the_environment(start_app: Callable[..., App]) -> None:
    app = start_app({"PORT": "9090"}, port=9090)
    assert app.get("/health").status_code == 200


def test_stops_promptly_on_sigterm(start_app: Callable[..., App]) -> None:
    app = start_app()
    started = time.monotonic()
    app.container.stop(timeout=5)
    assert time.monotonic() - started < 2
    app.container.reload()
    assert app.container.attrs["State"]["ExitCode"] == 0
