"""A fresh machine (issue 17): what `make run` needs is checked first, and a missing piece is named once with
the command that installs it. The verdicts are a table; the checks run against the real Docker and nginx; and
the README's first command runs on a machine state without nginx."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from orchestry.cli import doctor
from orchestry.config import load_settings
from orchestry.workflows.deps import (
    NGINX_PACKAGES,
    Dependency,
    DockerObserved,
    NginxObserved,
    docker_verdict,
    nginx_verdict,
    remedy,
)

from conftest import ROOT

NDK, LUA = doctor.MODULES
SOCK = "unix:///var/run/docker.sock"
RESTY_MISSING = (
    "nginx: [error] init_by_lua error: init_by_lua:1: module 'resty.core' not found:\n"
    "\tno field package.preload['resty.core']\n\tno file '/usr/share/lua/5.1/resty/core.lua'"
)
CJSON_MISSING = "nginx: [error] init_by_lua error: init_by_lua:1: module 'cjson' not found:"


@pytest.mark.parametrize(
    ("seen", "ok", "packages", "says"),
    [
        (NginxObserved("off", "/nowhere/nginx", None), True, (), "nginx is off"),
        (NginxObserved("managed", "nginx", "/usr/sbin/nginx"), True, (), "loads the Lua module"),
        (NginxObserved("external", "nginx", "/usr/sbin/nginx"), True, (), "loads the Lua module"),
        (NginxObserved("managed", "nginx", None), False, NGINX_PACKAGES, "no `nginx` on PATH"),
        (
            NginxObserved("managed", "nginx", None, elsewhere="/usr/sbin/nginx"),
            False,
            (),
            "there is /usr/sbin/nginx",
        ),
        (NginxObserved("managed", "/opt/nginx", None), False, (), "/opt/nginx does not exist"),
        (
            NginxObserved("managed", "nginx", "/usr/sbin/nginx", modules_missing=(NDK, LUA)),
            False,
            ("libnginx-mod-http-lua",),
            "the Lua module is missing",
        ),
        (
            NginxObserved("managed", "nginx", "/usr/sbin/nginx", test_output=RESTY_MISSING),
            False,
            ("lua-resty-core",),
            "module 'resty.core' not found",
        ),
        (
            NginxObserved("managed", "nginx", "/usr/sbin/nginx", test_output=RESTY_MISSING + "\n" + CJSON_MISSING),
            False,
            ("lua-resty-core", "lua-cjson"),
            "refuses",
        ),
        (  # refused for a reason no package names: Debian's Lua packages, all of them, are the fix to try
            NginxObserved("managed", "nginx", "/usr/sbin/nginx", test_output="nginx: [emerg] something else"),
            False,
            NGINX_PACKAGES[1:],
            "something else",
        ),
        (  # a custom nginx build without Lua: no package helps it
            NginxObserved("managed", "/opt/nginx/sbin/nginx", "/opt/nginx/sbin/nginx", test_output="[emerg] x"),
            False,
            (),
            "refuses",
        ),
    ],
)
def test_nginx_verdicts(seen: NginxObserved, ok: bool, packages: tuple[str, ...], says: str) -> None:
    dep = nginx_verdict(seen)
    assert (dep.ok, dep.packages) == (ok, packages)
    assert says in dep.detail
    assert dep.ok or dep.packages or dep.fix  # a missing piece always comes with what to do


@pytest.mark.parametrize(
    ("seen", "ok", "packages", "fix"),
    [
        (DockerObserved("unix:///var/run/docker.sock", None, True), True, (), ""),
        (
            DockerObserved("unix:///var/run/docker.sock", "No such file or directory", False),
            False,
            ("docker.io",),
            "start",
        ),
        (
            DockerObserved("unix:///var/run/docker.sock", "Connection refused", True),
            False,
            (),
            "systemctl start docker",
        ),
    ],
)
def test_docker_verdicts(seen: DockerObserved, ok: bool, packages: tuple[str, ...], fix: str) -> None:
    dep = docker_verdict(seen)
    assert (dep.ok, dep.packages) == (ok, packages)
    assert fix in dep.fix


DOCKER_OK = Dependency("docker", True, "answers")
NGINX_OK = Dependency("nginx", True, "loads")
NO_NGINX = Dependency("nginx", False, "no `nginx` on PATH", NGINX_PACKAGES)
NO_LUA = Dependency("nginx", False, "the Lua module is missing", ("libnginx-mod-http-lua",))
NO_DOCKER = Dependency("docker", False, "does not answer", ("docker.io",), "then start it")
DOCKER_IDLE = Dependency("docker", False, "does not answer", (), "start it: `systemctl start docker`")
WRONG_BINARY = Dependency("nginx", False, "nginx_binary /opt/x does not exist", fix="set ORCHESTRY_NGINX_BINARY")
APT = "apt-get install -y --no-install-recommends "


@pytest.mark.parametrize(
    ("deps", "debian", "root", "command", "install", "says"),
    [
        ((DOCKER_OK, NGINX_OK), True, True, None, False, []),
        ((DOCKER_OK, NO_NGINX), True, True, APT + " ".join(NGINX_PACKAGES), True, ["nginx: no `nginx`"]),
        ((DOCKER_OK, NO_NGINX), True, False, "sudo " + APT + " ".join(NGINX_PACKAGES), False, ["sudo apt-get"]),
        ((DOCKER_OK, NO_NGINX), False, True, None, False, ["package manager: nginx with its Lua module"]),
        ((NO_DOCKER, NO_LUA), True, True, APT + "docker.io libnginx-mod-http-lua", True, ["docker:", "nginx:"]),
        ((DOCKER_IDLE, NGINX_OK), True, True, None, False, ["systemctl start docker"]),
        ((DOCKER_OK, WRONG_BINARY), True, True, None, False, ["set ORCHESTRY_NGINX_BINARY", "ORCHESTRY_NGINX=off"]),
    ],
)
def test_one_message_one_command(
    deps: tuple[Dependency, ...], debian: bool, root: bool, command: str | None, install: bool, says: list[str]
) -> None:
    plan = remedy(deps, debian=debian, root=root, may_install=True)
    assert (plan.command, plan.install) == (command, install)
    assert bool(plan.message) == any(not d.ok for d in deps)
    for text in says:
        assert text in plan.message
    if command:
        assert f"Install with: {command}" in plan.message
    assert not remedy(deps, debian=debian, root=root, may_install=False).install  # `--check` never installs


# --- the real checks --------------------------------------------------------------------------------------


def settings(**env: str):  # type: ignore[no-untyped-def]
    return load_settings(env={f"ORCHESTRY_{k.upper()}": v for k, v in env.items()})


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_the_real_nginx_loads_the_lua_module_and_libraries() -> None:
    seen = doctor.observe_nginx(settings())
    assert seen.path is not None, "nginx is not on PATH (`.ci/run` installs it)"
    assert seen.modules_missing == () and seen.test_output is None
    assert nginx_verdict(seen).ok


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_a_library_the_real_nginx_cannot_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    path = shutil.which("nginx")
    assert path
    monkeypatch.setattr(doctor, "_MINIMAL", doctor._MINIMAL.replace('require "cjson"', 'require "cjson_absent"'))
    output = doctor.nginx_test(path)
    assert output is not None and "module 'cjson_absent' not found" in output
    monkeypatch.setattr(doctor, "MODULES", (NDK, "/usr/lib/nginx/modules/absent_module.so"))
    seen = doctor.observe_nginx(settings())
    assert seen.modules_missing == ("/usr/lib/nginx/modules/absent_module.so",)
    assert nginx_verdict(seen).packages == ("libnginx-mod-http-lua",)


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_the_real_docker_answers_and_a_missing_socket_does_not(tmp_path: Path) -> None:
    assert doctor.ping_docker(doctor.docker_endpoint()) is None
    error = doctor.ping_docker(f"unix://{tmp_path}/docker.sock")
    assert error is not None and "No such file" in error


def deps_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRY_")}
    return {**env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "ORCHESTRY_DATA_DIR": str(tmp_path / "data"), **extra}


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_deps_is_quiet_on_a_ready_machine_and_off_skips_nginx(tmp_path: Path) -> None:
    ready = subprocess.run([ROOT / "scripts" / "deps"], env=deps_env(tmp_path), capture_output=True, text=True)
    assert (ready.returncode, ready.stdout, ready.stderr) == (0, "", "")
    off = subprocess.run(
        [ROOT / "scripts" / "deps", "--verbose"],
        env=deps_env(tmp_path, ORCHESTRY_NGINX="off", ORCHESTRY_NGINX_BINARY="/nowhere/nginx"),
        capture_output=True,
        text=True,
    )
    assert off.returncode == 0, off.stderr
    assert "nginx is off" in off.stdout


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_doctor_prints_each_dependency(tmp_path: Path) -> None:
    env = deps_env(tmp_path, ORCHESTRY_NGINX_BINARY=str(tmp_path / "nginx"), DOCKER_HOST=f"unix://{tmp_path}/d.sock")
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "orchestry"), "doctor"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stdout.splitlines()[:2] == [
        f"docker   missing  the engine does not answer at unix://{tmp_path}/d.sock: No such file or directory",
        f"nginx    missing  nginx_binary {tmp_path}/nginx does not exist",
    ]
    assert "set ORCHESTRY_NGINX_BINARY" in done.stderr


# --- the README's first command on a machine without nginx ---------------------------------------------------


def make_run(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`make run` as the README says, in its own process group on ports of its own: if the check let it
    through, the controller it starts is ended with the group (and never takes the default ports)."""
    from pg_server import free_port

    assert "make run" in (ROOT / "README.md").read_text().split("```sh", 1)[1].splitlines()[1]
    ports = {f"ORCHESTRY_{k}": str(free_port()) for k in ("PORT", "PROXY_PORT", "NGINX_CONTROL_PORT", "PROXY_TLS_PORT")}
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=deps_env(tmp_path, **ports, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"make run did not stop at the missing nginx: {err!r}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_make_run_without_nginx_on_path_stops_with_the_fix(tmp_path: Path) -> None:
    path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "nginx")))
    done = make_run(tmp_path, PATH=path)
    assert done.returncode != 0
    assert "Missing:\n  - nginx: no `nginx` on PATH" in done.stderr
    assert "ORCHESTRY_NGINX_BINARY=" in done.stderr and "ORCHESTRY_NGINX=off make run" in done.stderr
    assert "orchestry listening" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_make_run_with_a_configured_nginx_that_does_not_exist_stops(tmp_path: Path) -> None:
    config = tmp_path / "config" / "orchestry"
    config.mkdir(parents=True)
    (config / "config.yaml").write_text(f"nginx_binary: {tmp_path}/sbin/nginx\n")
    done = make_run(tmp_path)
    assert done.returncode != 0
    assert f"nginx: nginx_binary {tmp_path}/sbin/nginx does not exist" in done.stderr
    assert "orchestry listening" not in done.stderr and "Traceback" not in done.stderr


def test_the_readme_command_installs_every_package_the_check_names() -> None:
    text = (ROOT / "README.md").read_text()
    head = text.split("## ", 1)[0]
    command = next(line for line in head.splitlines() if line.startswith("sudo apt-get install"))
    assert set(NGINX_PACKAGES) | {"docker.io", "make", "python3-venv"} <= set(command.split())
    assert "ORCHESTRY_NGINX=off make run" in head and "orchestry doctor" in head


@pytest.mark.live  # the machine's real nginx, Docker or `make run`
def test_as_root_on_debian_the_missing_packages_are_installed_then_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The install path's sequence (the packages themselves cannot be removed from a shared test machine):
    missing nginx -> apt-get with exactly its packages -> checked again -> ok; `--check` never installs."""
    real = doctor.observe_nginx
    installed: list[tuple[str, ...]] = []
    monkeypatch.setattr(doctor, "is_debian", lambda: True)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        doctor, "observe_nginx", lambda s: real(s) if installed else NginxObserved("managed", "nginx", None)
    )
    monkeypatch.setattr(doctor, "install", lambda plan: installed.append(plan.packages))
    deps, plan, failure = doctor.diagnose(settings(), may_install=False)
    assert installed == [] and not plan.install and plan.missing  # --check
    deps, plan, failure = doctor.diagnose(settings(), may_install=True)
    assert installed == [NGINX_PACKAGES]
    assert failure is None and plan.missing == () and all(d.ok for d in deps)
