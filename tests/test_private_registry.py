"""Private registries against a real one: Debian's `docker-registry` on 127.0.0.1 with htpasswd auth
(testapp/registry.py). The test image is pushed there under a name of its own and removed locally, so every
deploy below has to pull it: without credentials, with the right ones, with a wrong password, and for a tag
that does not exist. The engine's and Swarm's side of the pull are tested on the real engine too."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import docker.errors
import pytest

from orchestry.runtime.docker_engine import DockerEngine
from orchestry.runtime.swarm_engine import SwarmEngine
from orchestry.runtime.types import ImageUnavailable, RegistryAuth
from orchestry.testapp.ports import free_port
from orchestry.testapp.registry import LocalRegistry, RegistryMissing, local_registry, slow_proxy

from conftest import LiveServer, docker_client, hello, post

LIVE_FIXTURES = ("registry",)
FAST_SECONDS = 20  # a refused pull ends the job at once: seconds, on a loaded machine too (no retry backoff)


@pytest.fixture(scope="module")
def registry(testapp_image: str) -> Iterator[LocalRegistry]:
    try:
        with local_registry() as running:
            yield running
    except RegistryMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def image(registry: LocalRegistry, testapp_image: str) -> Iterator[str]:
    """The test image pushed to the registry under a unique name, and absent from the engine."""
    client = docker_client()
    repository = f"{registry.server}/orchestry-ci/app-{uuid.uuid4().hex[:10]}"
    name = f"{repository}:1"
    client.images.get(testapp_image).tag(repository, "1")
    try:
        auth = {"username": registry.username, "password": registry.password}
        for event in client.api.push(repository, tag="1", auth_config=auth, stream=True, decode=True):
            assert "error" not in event, event
        client.images.remove(name)  # the tag only: orchestry-testapp:latest keeps the layers
        yield name
    finally:
        for tag in (name, f"{repository}:nope"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag)


BIG_LAYER = 6_000_000  # random bytes: gzip cannot shrink them
SLOW_RATE = 1_500_000  # bytes/s through the slow proxy: the big layer takes about 4 s


@pytest.fixture
def big_image(registry: LocalRegistry, testapp_image: str) -> Iterator[str]:
    """The test image with a layer of BIG_LAYER random bytes more, pushed to the registry and removed from the
    engine whole (that layer is on no other image), so a pull has to fetch it."""
    client = docker_client()
    repository = f"{registry.server}/orchestry-ci/big-{uuid.uuid4().hex[:10]}"
    name = f"{repository}:1"
    with tempfile.TemporaryDirectory() as context:
        with open(os.path.join(context, "blob"), "wb") as blob:
            blob.write(os.urandom(BIG_LAYER))
        with open(os.path.join(context, "Dockerfile"), "w") as dockerfile:
            dockerfile.write(f"FROM {testapp_image}\nCOPY blob /blob\n")
        client.images.build(path=context, tag=name, pull=False, rm=True)
    try:
        auth = {"username": registry.username, "password": registry.password}
        for event in client.api.push(repository, tag="1", auth_config=auth, stream=True, decode=True):
            assert "error" not in event, event
        client.images.remove(name)
        yield repository.removeprefix(registry.server + "/") + ":1"
    finally:
        for leftover in [name, *(i.tags[0] for i in client.images.list(name=repository) if i.tags)]:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(leftover)


def login(
    live: LiveServer, registry: LocalRegistry, password: str | None = None, server: str | None = None, *flags: str
) -> subprocess.CompletedProcess[str]:
    return live.cli(
        "registry",
        "login",
        server or registry.server,
        "--username",
        registry.username,
        "--password-stdin",
        *flags,
        stdin=(password or registry.password).encode() + b"\n",
    )


def logged_in(
    live: LiveServer, registry: LocalRegistry, password: str | None = None, server: str | None = None, *flags: str
) -> None:
    server = server or registry.server
    out = login(live, registry, password, server, *flags)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"logged in to {server} as {registry.username}")


def deploy(live: LiveServer, app: str, image: str) -> tuple[dict[str, Any], float]:
    assert post(live, hello(app, image=image)).status_code == 201
    began = time.monotonic()
    resp = live.http.post(f"/api/v1/apps/{app}/up", json={"replicas": 1})
    assert resp.status_code == 202, resp.text
    job = live.wait_job(resp.json()["job"]["id"], timeout=120)
    return job, time.monotonic() - began


def assert_failed_once(live: LiveServer, app: str, job: dict[str, Any], seconds: float) -> None:
    """Failed at its first attempt, within seconds, and not retried by anyone (job or reconcile sweep)."""
    assert job["status"] == "failed", job
    assert seconds < FAST_SECONDS, f"the failed pull took {seconds:.1f} s"
    outcomes = [entry["outcome"] for entry in job["history"]]
    assert "retry" not in outcomes and job["attempts"] == 1 + outcomes.count("abandoned"), job
    app_row = live.http.get(f"/api/v1/apps/{app}").json()
    assert app_row["status"] == "failed" and job["error"] in app_row["status_reason"]
    assert len(live.http.get("/api/v1/jobs", params={"app": app}).json()["jobs"]) == 1
    assert live.containers(app) == []


def pull_steps(job: dict[str, Any], image: str) -> list[tuple[str, str]]:
    """The pull's steps, its progress steps (a pull longer than a second has some) counted as its opening one."""
    steps = [(s["step"], s["status"]) for s in job["steps"] if image in s["step"]]
    return [step for i, step in enumerate(steps) if i == 0 or step != steps[i - 1]]


def test_without_credentials_the_deploy_fails_fast_as_unauthorized(live: LiveServer, image: str) -> None:
    job, seconds = deploy(live, "nocreds", image)
    server = image.split("/")[0]
    assert job["error"] == (
        f"unauthorized: {server} needs credentials (pulling {image}); `orchestry registry login {server}`"
    ), job
    assert pull_steps(job, image) == [(f"pulling {image}", "running"), (f"pull {image}", "failed")]
    assert_failed_once(live, "nocreds", job, seconds)
    print(f"unauthorized pull failed the job in {seconds:.2f} s")


def test_after_registry_login_the_image_is_pulled_and_runs(
    live: LiveServer, registry: LocalRegistry, image: str
) -> None:
    logged_in(live, registry)
    listed = live.cli("registries")
    assert registry.server in listed.stdout and registry.username in listed.stdout
    assert registry.password not in listed.stdout
    job, seconds = deploy(live, "private", image)
    assert job["status"] == "succeeded", job
    assert pull_steps(job, image) == [(f"pulling {image}", "running"), (f"pull {image}", "ok")]
    pulled = next(s for s in job["steps"] if s["step"] == f"pull {image}")
    assert pulled["registry"] == registry.server and pulled["digest"].startswith("sha256:")
    # The test image's layers are on the engine already (orchestry-testapp:latest): nothing to fetch but the name.
    assert pulled["summary"].startswith("nothing to download") or pulled["layers"] >= 1, pulled
    (box,) = live.containers("private")
    assert box.status == "running" and box.inspect()["Config"]["Image"] == image
    # The password is nowhere the API, the events or the controller's log show.
    for text in (
        live.http.get("/api/v1/registries").text,
        live.http.get(f"/api/v1/jobs/{job['id']}").text,
        live.http.get("/api/v1/events").text,
        live.log(),
    ):
        assert registry.password not in text
    print(f"deploy with a pull: {seconds:.2f} s; {pulled['summary']}")

    out = live.cli("registry", "logout", registry.server)
    assert out.returncode == 0 and out.stdout.strip() == f"logged out of {registry.server}", out.stderr
    assert live.cli("registries").stdout.strip() == "no registries"
    again = live.cli("registry", "logout", registry.server)
    assert again.returncode == 1 and "does not exist" in again.stderr and "Traceback" not in again.stderr


def test_a_slow_pull_records_its_progress_while_it_runs(
    live: LiveServer, registry: LocalRegistry, big_image: str
) -> None:
    """Through a registry that answers at 1.5 MB/s, the 6 MB layer takes seconds: the job records progress
    steps during the pull (layers and bytes moving), at most one a second, between `pulling` and `pull`."""
    with slow_proxy(registry.server, SLOW_RATE) as proxy:
        image = f"{proxy.server}/{big_image}"
        logged_in(live, registry, server=proxy.server)
        job, _ = deploy(live, "bigpull", image)
    assert job["status"] == "succeeded", job
    steps = [s for s in job["steps"] if image in s["step"]]
    assert steps[0]["step"] == f"pulling {image}" and "progress" not in steps[0]
    assert steps[-1]["step"] == f"pull {image}" and steps[-1]["status"] == "ok"
    progress = steps[1:-1]
    assert len(progress) >= 2, steps
    assert all(s["step"] == f"pulling {image}" and s["status"] == "running" for s in progress)
    done = [s["bytes_done"] for s in progress]
    assert done == sorted(done) and done[0] < done[-1], progress
    # Intermediate: some step saw the big layer part-way, with its size announced.
    assert any(0 < s["bytes_done"] < s["bytes_total"] and s["bytes_total"] >= BIG_LAYER for s in progress), progress
    assert all(s["progress"].endswith("MB") and "/" in s["progress"] for s in progress), progress
    # Throttled: a second at least between two steps of the pull (their times are the controller's).
    times = [datetime.fromisoformat(s["at"]) for s in steps[:-1]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.99, gaps
    pulled = steps[-1]
    assert pulled["downloaded"] >= 1 and pulled["bytes"] >= BIG_LAYER, pulled
    print(f"pull of {pulled['bytes'] / 1e6:.1f} MB in {pulled['seconds']:.1f} s: {len(progress)} progress steps")


def test_a_wrong_password_fails_the_deploy_naming_the_server(
    live: LiveServer, registry: LocalRegistry, image: str
) -> None:
    # Stored unchecked: as when the registry's password changed after the login.
    logged_in(live, registry, "not-the-password", None, "--no-check")
    job, seconds = deploy(live, "wrongpw", image)
    assert job["error"] == f"unauthorized: wrong credentials for {registry.server} (pulling {image})", job
    assert_failed_once(live, "wrongpw", job, seconds)
    assert "not-the-password" not in json.dumps(job)


def test_a_missing_tag_fails_the_deploy_as_not_found(live: LiveServer, registry: LocalRegistry, image: str) -> None:
    logged_in(live, registry)
    missing = image.rsplit(":", 1)[0] + ":nope"
    job, seconds = deploy(live, "notag", missing)
    assert job["error"] == f"image not found: {missing} ({registry.server} has no such repository or tag)", job
    assert_failed_once(live, "notag", job, seconds)


def test_login_asks_the_registry_first_and_stores_nothing_it_refuses(live: LiveServer, registry: LocalRegistry) -> None:
    """`registry login` checks the credentials with the registry (its /v2/ challenge, as `docker login`): a wrong
    password is refused in one line naming `password`, a registry that does not answer in one naming `server`,
    and neither stores anything; `--no-check` stores without asking."""
    wrong = login(live, registry, "not-the-password")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr, wrong.stderr
    refused = f"orchestry: password: {registry.server} refused these credentials (HTTP 401"
    assert wrong.stderr.startswith(refused), wrong.stderr
    assert "wrong username or password" in wrong.stderr and "not-the-password" not in wrong.stderr
    assert live.cli("registries").stdout.strip() == "no registries"

    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    gone = login(live, registry, None, nobody)
    assert gone.returncode == 1 and gone.stderr.startswith("orchestry: server: no registry answered ("), gone.stderr
    assert "--no-check" in gone.stderr and time.monotonic() - began < 10
    assert live.cli("registries").stdout.strip() == "no registries"
    kinds = [e["type"] for e in live.http.get("/api/v1/events").json()["events"]]
    assert "registry.login" not in kinds

    unchecked = login(live, registry, None, nobody, "--no-check")
    assert unchecked.returncode == 0, unchecked.stderr
    assert unchecked.stdout.strip() == f"logged in to {nobody} as {registry.username} (stored, not checked)"
    right = login(live, registry)
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip() == f"logged in to {registry.server} as {registry.username} (stored)"
    listed = live.cli("registries").stdout
    assert registry.server in listed and nobody in listed


def test_the_cli_refuses_a_bad_server_in_one_line(live: LiveServer) -> None:
    for server, rule in (("https://reg.example.com", "scheme"), ("reg.example.com/team", "path")):
        out = live.cli("registry", "login", server, "--username", "u", "--password-stdin", stdin=b"pw")
        assert out.returncode == 2 and rule in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = live.cli("registry", "login", "reg.example.com", "--username", "u", "--password-stdin", stdin=b"pw\n\n")
    assert out.returncode == 1 and "password: must not contain control characters" in out.stderr, out.stderr


def test_the_engine_pulls_with_credentials_and_says_why_it_cannot(registry: LocalRegistry, image: str) -> None:
    engine = DockerEngine()
    right = RegistryAuth(registry.server, registry.username, registry.password)
    wrong = RegistryAuth(registry.server, registry.username, "wrong")
    try:
        with pytest.raises(ImageUnavailable, match="needs credentials"):
            engine.ensure_image(image)
        with pytest.raises(ImageUnavailable, match="wrong credentials"):
            engine.ensure_image(image, wrong)
        calls: list[str] = []
        pulled = engine.ensure_image(image, right, on_pull=lambda: calls.append("began"))
        assert calls == ["began"] and pulled is not None and pulled.digest and pulled.digest.startswith("sha256:")
        assert engine.ensure_image(image, right, on_pull=lambda: calls.append("again")) is None  # present now
        assert calls == ["began"]
        assert "wrong" not in repr(wrong) and wrong == RegistryAuth(registry.server, registry.username, "other")
    finally:
        engine.close()


def test_swarm_looks_the_image_up_in_its_registry_before_any_task(registry: LocalRegistry, image: str) -> None:
    """The swarm runtime's check (the registry's answer through the engine, no pull) runs on any engine."""
    engine = SwarmEngine(client=docker_client())
    right = RegistryAuth(registry.server, registry.username, registry.password)
    with pytest.raises(ImageUnavailable, match=f"unauthorized: {registry.server} needs credentials"):
        engine.ensure_image(image)
    with pytest.raises(ImageUnavailable, match="wrong credentials"):
        engine.ensure_image(image, RegistryAuth(registry.server, registry.username, "wrong"))
    with pytest.raises(ImageUnavailable, match="image not found"):
        engine.ensure_image(image.rsplit(":", 1)[0] + ":nope", right)
    assert engine.ensure_image(image, right) is None
