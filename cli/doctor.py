"""`orchestry doctor` and `scripts/deps`: is this machine ready for `orchestry serve`, and if not, what to do.

The observations are the real thing, and fast on a ready machine: Docker's `/_ping` on its socket, and
`nginx -t` on a minimal configuration (in a throwaway prefix) that loads the NDK and Lua modules by absolute
path and requires `resty.core` and `cjson`, as Orchestry's own nginx does. The verdicts are pure
(workflows/deps.py). On Debian/Ubuntu as root, `--install` installs the missing packages (and starts an
installed Docker engine that does not answer), then checks again. Kept light: `make run` runs it first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from orchestry.config import ConfigError, Settings, load_settings
from orchestry.workflows.deps import (
    Dependency,
    DockerObserved,
    NginxObserved,
    Remedy,
    docker_verdict,
    nginx_verdict,
    remedy,
)

# The modules Orchestry's nginx loads (nginx/render.py's DEFAULT_MODULES; not imported: it pulls in jinja2).
MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
NGINX_TEST_TIMEOUT = 10.0
DOCKER_TIMEOUT = 3.0
DOCKERD_LOG = "/tmp/orchestry-dockerd.log"


def observe_nginx(settings: Settings) -> NginxObserved:
    binary = str(settings.nginx_binary)
    if settings.nginx == "off":
        return NginxObserved("off", binary, None)
    path = shutil.which(binary) if "/" not in binary else (binary if os.access(binary, os.X_OK) else None)
    if path is None:
        # `orchestry serve` runs it from PATH: an nginx in /usr/sbin that a user's PATH lacks is no use to it
        elsewhere = next((p for p in (f"/usr/sbin/{binary}", f"/sbin/{binary}") if os.access(p, os.X_OK)), None)
        return NginxObserved(settings.nginx, binary, None, elsewhere=None if "/" in binary else elsewhere)
    missing = tuple(m for m in MODULES if not os.path.exists(m))
    if missing:
        return NginxObserved(settings.nginx, binary, path, modules_missing=missing)
    return NginxObserved(settings.nginx, binary, path, test_output=nginx_test(path))


# `nginx -t` loads the modules but skips `init_by_lua*`: the libraries are only loaded once nginx starts. So
# after the test, the same file runs in the foreground, where the init block requires them and exits at once.
_MINIMAL = """\
{load}
pid {prefix}/nginx.pid;
error_log stderr;
daemon off;
master_process off;
events {{ worker_connections 16; }}
http {{
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    access_log off;
    init_by_lua_block {{ require "resty.core"; require "cjson"; os.exit(0) }}
}}
"""


def nginx_test(path: str) -> str | None:
    """`nginx -t` on the minimal configuration, then the same started (its init block loads the Lua
    libraries and exits): None when both pass, else nginx's output."""
    with tempfile.TemporaryDirectory(prefix="orchestry-deps-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        load = "\n".join(f"load_module {m};" for m in MODULES)
        conf.write_text(_MINIMAL.format(load=load, prefix=prefix))
        (Path(prefix) / "logs").mkdir()
        for flags in (["-t", "-q"], []):
            try:
                done = subprocess.run(
                    [path, *flags, "-p", prefix, "-c", str(conf)],
                    capture_output=True,
                    text=True,
                    timeout=NGINX_TEST_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"nginx could not run: {exc}"
            if done.returncode != 0:
                return done.stderr or done.stdout or f"exit code {done.returncode}"
    return None


def docker_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def observe_docker() -> DockerObserved:
    endpoint = docker_endpoint()
    installed = shutil.which("dockerd") is not None or os.access("/usr/sbin/dockerd", os.X_OK)
    return DockerObserved(endpoint, ping_docker(endpoint), installed)


def ping_docker(endpoint: str) -> str | None:
    """None when the engine answers `GET /_ping` with 200, else why not (one line)."""
    try:
        if endpoint.startswith("unix://"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(DOCKER_TIMEOUT)
                sock.connect(endpoint.removeprefix("unix://"))
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                status = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
        elif endpoint.startswith(("tcp://", "http://", "https://")):
            import http.client  # only here: it costs a tenth of this script's start-up

            host = endpoint.split("://", 1)[1].rstrip("/")
            tls = endpoint.startswith("https://") or bool(os.environ.get("DOCKER_TLS_VERIFY"))
            conn_type = http.client.HTTPSConnection if tls else http.client.HTTPConnection
            conn = conn_type(host, timeout=DOCKER_TIMEOUT)
            try:
                conn.request("GET", "/_ping")
                response = conn.getresponse()
                status = f"HTTP/1.1 {response.status}"
            finally:
                conn.close()
        else:
            return f"DOCKER_HOST {endpoint!r} is neither unix:// nor tcp://"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return None if status.split(" ")[1:2] == ["200"] else f"answered {status!r}"


def is_debian() -> bool:
    try:
        fields = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return False
    ids = {fields.get("ID", "").strip('"')} | set(fields.get("ID_LIKE", "").strip('"').split())
    return bool(ids & {"debian", "ubuntu"}) and shutil.which("apt-get") is not None


def check(settings: Settings) -> tuple[Dependency, ...]:
    return (docker_verdict(observe_docker()), nginx_verdict(observe_nginx(settings)))


def install(plan: Remedy) -> str | None:
    """Run the plan's apt-get (as root); None when it worked, else apt's last lines."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"orchestry: installing {' '.join(plan.packages)} (apt-get)", file=sys.stderr)
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *plan.packages],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(argv)}` failed: " + " / ".join(tail)
    return None


def start_docker(wait: float = 60.0) -> bool:
    """As root, start an installed engine that does not answer (a machine without systemd, e.g. CI)."""
    if os.path.isdir("/run/systemd/system"):  # systemd runs it: ask systemd
        print("orchestry: starting Docker (systemctl start docker)", file=sys.stderr)
        subprocess.run(["systemctl", "start", "docker"], capture_output=True, check=False, timeout=wait)
    else:
        binary = shutil.which("dockerd") or "/usr/sbin/dockerd"
        print(f"orchestry: starting dockerd (log: {DOCKERD_LOG})", file=sys.stderr)
        with open(DOCKERD_LOG, "ab") as out:
            subprocess.Popen([binary], stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if ping_docker(docker_endpoint()) is None:
            return True
        time.sleep(0.5)
    return False


def diagnose(settings: Settings, *, may_install: bool) -> tuple[tuple[Dependency, ...], Remedy, str | None]:
    """Check; with `may_install` (Debian/Ubuntu, root) install or start what is missing and check again."""
    debian, root = is_debian(), os.geteuid() == 0
    deps = check(settings)
    plan = remedy(deps, debian=debian, root=root, may_install=may_install)
    failure = None
    acted = False
    if plan.install:
        failure = install(plan)
        acted = True
    docker = next(d for d in check(settings) if d.name == "docker") if acted else deps[0]
    local = "DOCKER_HOST" not in os.environ  # an engine named elsewhere is not this machine's to start
    if may_install and root and local and not docker.ok and not docker.packages and shutil.which("dockerd"):
        acted = start_docker() or acted
    if acted:
        deps = check(settings)
        plan = remedy(deps, debian=debian, root=root, may_install=False)
    return deps, plan, failure


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`orchestry doctor`: each dependency ok or missing with its fix; exit 1 when one is missing."""
    deps, plan, failure = diagnose(settings, may_install=bool(getattr(args, "install", False)))
    if args.json:
        import json  # only here: scripts/deps never prints JSON and starts faster without it

        print(
            json.dumps(
                {
                    "ok": not plan.missing,
                    "dependencies": [
                        {
                            "name": d.name,
                            "state": "ok" if d.ok else "missing",
                            "detail": d.detail,
                            "packages": d.packages,
                        }
                        for d in deps
                    ],
                    "command": plan.command,
                    "install_error": failure,
                },
                indent=2,
            )
        )
    elif not getattr(args, "quiet", False):
        for d in deps:
            print(f"{d.name:<8} {'ok' if d.ok else 'missing':<8} {d.detail}")
        if plan.missing:
            print()
    if plan.missing and not args.json:
        if failure:
            print(f"orchestry: {failure}", file=sys.stderr)
        print(plan.message, file=sys.stderr)
    return 1 if plan.missing else 0


def main(argv: Sequence[str] | None = None) -> int:
    """scripts/deps: check (and on Debian/Ubuntu as root install) before `orchestry serve`; quiet when ready."""
    parser = argparse.ArgumentParser(prog="scripts/deps", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, never install")
    parser.add_argument("--verbose", action="store_true", help="print every dependency's state")
    parser.add_argument("--config", metavar="PATH")
    opts = parser.parse_args(argv)
    try:
        settings = load_settings(config_path=opts.config)
    except ConfigError as exc:
        print(f"orchestry: configuration error: {exc}", file=sys.stderr)
        return 2
    args = argparse.Namespace(json=False, quiet=not opts.verbose, install=not opts.check)
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
