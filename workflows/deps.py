"""What `make run` needs from the machine, and what to say (or install) when a piece is missing.

Pure: the checks (cli/doctor.py) observe Docker and nginx; `nginx_verdict`, `docker_verdict` and
`remedy` turn those observations into each dependency's state and into one message with one command.
Debian's packages are the reference: nginx, its Lua module (which pulls in the NDK module), lua-resty-core
(`require "resty.core"`, which the Lua module needs at start) and lua-cjson (the routing table is JSON).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NGINX_PACKAGES = ("nginx", "libnginx-mod-http-lua", "lua-resty-core", "lua-cjson")
DOCKER_PACKAGES = ("docker.io",)
# What a Lua `require` that fails in `nginx -t` names, and the package that provides it.
LUA_LIBRARIES = {"resty.core": "lua-resty-core", "cjson": "lua-cjson"}
_NOT_FOUND = re.compile(r"module '([\w.]+)' not found")


@dataclass(frozen=True)
class NginxObserved:
    mode: str  # the `nginx` setting: managed, external or off
    binary: str  # the `nginx_binary` setting as written
    path: str | None  # where it resolves (None: not found)
    elsewhere: str | None = None  # not on PATH, but installed there (/usr/sbin is not on every user's PATH)
    modules_missing: tuple[str, ...] = ()  # module files (load_module paths) that do not exist
    test_output: str | None = None  # `nginx -t` on the minimal config: None when it passed (or did not run)


@dataclass(frozen=True)
class DockerObserved:
    endpoint: str  # where the engine is asked (DOCKER_HOST or the default socket)
    error: str | None  # None: it answered /_ping
    daemon_installed: bool  # a `dockerd` is on PATH (installed, maybe not running)


@dataclass(frozen=True)
class Dependency:
    name: str  # docker, nginx
    ok: bool
    detail: str  # what was seen
    packages: tuple[str, ...] = ()  # Debian packages that provide what is missing
    fix: str = ""  # what to do when packages cannot fix it (or in addition)


@dataclass(frozen=True)
class Remedy:
    missing: tuple[Dependency, ...]
    packages: tuple[str, ...]  # to install, in a stable order
    command: str | None  # the one command to run (None: not Debian/Ubuntu, or nothing a package fixes)
    install: bool  # this process may run `command` itself (Debian/Ubuntu, as root, asked to)
    message: str  # the one message to print when something stays missing ("" when nothing is missing)


def nginx_verdict(seen: NginxObserved) -> Dependency:
    if seen.mode == "off":
        return Dependency("nginx", True, "not needed: nginx is off (no routing)")
    default_binary = "/" not in seen.binary  # a name looked up on PATH, as Debian installs it
    if seen.path is None:
        if default_binary and seen.elsewhere:
            return Dependency(
                "nginx",
                False,
                f"no `{seen.binary}` on PATH (there is {seen.elsewhere})",
                fix=f"add {seen.elsewhere.rsplit('/', 1)[0]} to PATH, or set ORCHESTRY_NGINX_BINARY={seen.elsewhere}",
            )
        if default_binary:
            return Dependency("nginx", False, f"no `{seen.binary}` on PATH", NGINX_PACKAGES)
        return Dependency(
            "nginx",
            False,
            f"nginx_binary {seen.binary} does not exist",
            fix="set ORCHESTRY_NGINX_BINARY (nginx_binary) to an nginx with the Lua module, or unset it to "
            "use Debian's nginx",
        )
    packages: list[str] = []
    if seen.modules_missing:
        packages.append("libnginx-mod-http-lua")
    for name in _NOT_FOUND.findall(seen.test_output or ""):
        if name in LUA_LIBRARIES:
            packages.append(LUA_LIBRARIES[name])
    if seen.modules_missing:
        detail = f"{seen.path}: the Lua module is missing ({', '.join(seen.modules_missing)})"
    elif seen.test_output is not None:
        detail = f"{seen.path} -t refuses the Lua module's config: {_first_error(seen.test_output)}"
    else:
        return Dependency("nginx", True, f"{seen.path} loads the Lua module, resty.core and cjson")
    if packages or default_binary:
        return Dependency("nginx", False, detail, tuple(dict.fromkeys(packages or NGINX_PACKAGES[1:])))
    return Dependency("nginx", False, detail, fix="use an nginx built with the Lua module (Debian's works)")


def docker_verdict(seen: DockerObserved) -> Dependency:
    if seen.error is None:
        return Dependency("docker", True, f"the engine answers at {seen.endpoint}")
    detail = f"the engine does not answer at {seen.endpoint}: {seen.error}"
    if seen.daemon_installed:
        return Dependency("docker", False, detail, fix="start it: `systemctl start docker` (or run `dockerd`)")
    return Dependency("docker", False, detail, DOCKER_PACKAGES, fix="then start it: `systemctl start docker`")


def remedy(deps: tuple[Dependency, ...], *, debian: bool, root: bool, may_install: bool) -> Remedy:
    """One message naming every missing piece, and the one command that installs the packages."""
    missing = tuple(d for d in deps if not d.ok)
    packages = tuple(dict.fromkeys(p for d in missing for p in d.packages))
    if not missing:
        return Remedy((), (), None, False, "")
    command = None
    if packages and debian:
        command = ("" if root else "sudo ") + "apt-get install -y --no-install-recommends " + " ".join(packages)
    lines = ["orchestry cannot route and run apps on this machine yet. Missing:"]
    lines += [f"  - {d.name}: {d.detail}" + (f" ({', '.join(d.packages)})" if d.packages else "") for d in missing]
    if command:
        lines.append(f"Install with: {command}")
    elif packages:
        lines.append(
            "Install with your system's package manager: nginx with its Lua module (ngx_http_lua_module and NDK), "
            "lua-resty-core and lua-cjson"
            if any(p in NGINX_PACKAGES for p in packages)
            else f"Install with your system's package manager: {', '.join(packages)}"
        )
    lines += [f"  {d.name}: {d.fix}" for d in missing if d.fix and (not d.packages or not command)]
    if any(d.name == "nginx" for d in missing):
        lines.append("Or run without routing, on purpose: ORCHESTRY_NGINX=off make run")
    return Remedy(missing, packages, command, bool(command) and root and may_install, "\n".join(lines))


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if "[emerg]" in line or "[error]" in line or "[alert]" in line:
            return line.split("]", 1)[-1].strip()
    return output.strip().splitlines()[0] if output.strip() else "(no output)"
