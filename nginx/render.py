"""The static nginx configuration (the "skeleton"), rendered from validated settings.

Pure: `render_config(settings) -> str`. The skeleton holds what changes rarely (ports, timeouts, logging,
the Lua router); replica changes never touch it, they go through the routing table (see routes.py).
Every path nginx would otherwise take from its compiled-in defaults (pid, error log, temp paths) is set
here, so Orchestry's nginx never writes to system paths.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from orchestry.nginx import validate

PACKAGE_DIR = Path(__file__).resolve().parent
LUA_DIR = PACKAGE_DIR / "lua"
TEMPLATE = "nginx.conf.j2"
HTTP_TEMPLATE = "http.conf.j2"  # the http-context part: all of it for an existing nginx (render_include)
# NDK first: the Lua module needs its symbols (`undefined symbol: ndk_set_var_value` otherwise).
DEFAULT_MODULES = (
    "/usr/lib/nginx/modules/ndk_http_module.so",
    "/usr/lib/nginx/modules/ngx_http_lua_module.so",
)
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@dataclass(frozen=True)
class NginxSettings:
    """Everything the skeleton depends on. Validated on construction, so a hostile value never renders.

    `routes_file` and `access_log` default to files under `prefix`. `user` is nginx's `user` directive,
    which matters only when nginx starts as root: without it the workers run as `nobody` and must be able to
    reach the prefix (a 0700 data directory is out of their reach), so a root deployment should name the
    user that owns the data directory.
    """

    prefix: Path
    listen_port: int = 8080
    bind_address: str = "127.0.0.1"
    control_port: int = 8081
    domain: str = "localhost"
    routes_file: Path | None = None
    access_log: str | None = None
    upstream_keepalive: int = 32
    upstream_keepalive_timeout: float = 60.0
    proxy_connect_timeout: float = 2.0
    proxy_read_timeout: float = 60.0
    proxy_send_timeout: float = 60.0
    worker_processes: int | str = "auto"
    worker_connections: int = 4096
    client_max_body_size: str = "10m"
    user: str | None = None
    group: str | None = None  # with `user`: the workers' group (nginx's default is the user's name)
    modules: tuple[str, ...] = DEFAULT_MODULES
    lua_dir: Path = LUA_DIR
    routes_dict_size: str = "16m"
    max_routes_body: str = "8m"
    error_log_level: str = "warn"
    traffic_counters: bool = True  # per-app counters in shared memory (the metrics' input); off: bench baseline
    stale_after: float = 10.0  # /_orchestry/ready answers 503 once the controller has not confirmed for this long
    control_secret_file: Path | None = None  # writes to the control endpoint need it; default under `prefix`
    tls_port: int | None = None  # HTTPS beside listen_port (certificates by SNI from the edge); None: none
    edge_dict_size: str = "32m"  # host routes, certificates and ACME answers

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", Path(validate.path(self.prefix, "prefix")))
        if self.routes_file is None:
            object.__setattr__(self, "routes_file", self.prefix / "routes.json")
        if self.access_log is None:
            object.__setattr__(self, "access_log", str(self.prefix / "logs" / "access.log"))
        if self.control_secret_file is None:
            object.__setattr__(self, "control_secret_file", self.prefix / "control.secret")
        _check(self)

    @property
    def conf_file(self) -> Path:
        return self.prefix / "conf" / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "logs" / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def temp_dir(self) -> Path:
        return self.prefix / "temp"

    @property
    def fallback_cert(self) -> Path:
        """Self-signed, made on first use: the TLS server's answer to a name without a certificate."""
        return self.prefix / "tls" / "fallback.crt"

    @property
    def fallback_key(self) -> Path:
        return self.prefix / "tls" / "fallback.key"

    @property
    def control_secret_path(self) -> Path:
        assert self.control_secret_file is not None  # filled in by __post_init__
        return self.control_secret_file

    @property
    def routes_path(self) -> Path:
        assert self.routes_file is not None  # filled in by __post_init__
        return self.routes_file


def _check(s: NginxSettings) -> dict[str, Any]:
    """The template's context: only validated values, keyed by the names the template uses."""
    if s.listen_port == s.control_port:
        raise ValueError(f"control_port: {s.control_port} is the listen port too")
    if s.tls_port is not None and s.tls_port in (s.listen_port, s.control_port):
        raise ValueError(f"tls_port: {s.tls_port} is the listen or control port too")
    if s.error_log_level not in ("debug", "info", "notice", "warn", "error", "crit"):
        raise ValueError(f"error_log_level: {s.error_log_level!r} is not an nginx log level")
    return {
        "prefix": validate.path(s.prefix, "prefix"),
        "listen_port": validate.port(s.listen_port, "listen_port"),
        "bind_address": validate.ipv4(s.bind_address, "bind_address"),
        "control_port": validate.port(s.control_port, "control_port"),
        "domain": validate.domain(s.domain),
        "routes_file": validate.path(s.routes_file, "routes_file"),
        "control_secret_file": validate.path(s.control_secret_file, "control_secret_file"),
        "access_log": validate.access_log(s.access_log),
        "upstream_keepalive": validate.positive_int(s.upstream_keepalive, "upstream_keepalive", 100_000),
        "upstream_keepalive_timeout_ms": validate.seconds(s.upstream_keepalive_timeout, "upstream_keepalive_timeout"),
        "proxy_connect_timeout_ms": validate.seconds(s.proxy_connect_timeout, "proxy_connect_timeout", 75),
        "proxy_read_timeout_ms": validate.seconds(s.proxy_read_timeout, "proxy_read_timeout"),
        "proxy_send_timeout_ms": validate.seconds(s.proxy_send_timeout, "proxy_send_timeout"),
        "worker_processes": validate.worker_processes(s.worker_processes),
        "worker_connections": validate.positive_int(s.worker_connections, "worker_connections", 1_000_000),
        "user": None if s.user is None else validate.user_name(s.user),
        "group": None if s.group is None or s.user is None else validate.user_name(s.group, "group"),
        "modules": [validate.path(m, "modules") for m in s.modules],
        "lua_dir": validate.path(s.lua_dir, "lua_dir"),
        "client_max_body_size": validate.size(s.client_max_body_size, "client_max_body_size"),
        "routes_dict_size": validate.size(s.routes_dict_size, "routes_dict_size"),
        "max_routes_body": validate.size(s.max_routes_body, "max_routes_body"),
        "error_log_level": s.error_log_level,
        "traffic_counters": "true" if s.traffic_counters is True else "false",
        "stale_after": validate.seconds(s.stale_after, "stale_after", 3600) / 1000,
        "tls_port": None if s.tls_port is None else validate.port(s.tls_port, "tls_port"),
        "edge_dict_size": validate.size(s.edge_dict_size, "edge_dict_size"),
        "fallback_cert": validate.path(s.fallback_cert, "fallback_cert"),
        "fallback_key": validate.path(s.fallback_key, "fallback_key"),
        "pid_file": validate.path(s.pid_file, "pid_file"),
        "error_log": validate.path(s.error_log, "error_log"),
        "temp_paths": {name: validate.path(s.temp_dir / name, "temp_dir") for name in TEMP_DIRS},
    }


@functools.cache
def _environment() -> jinja2.Environment:
    """One environment: it keeps each template compiled (the leader renders every few seconds to compare)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # nginx syntax, not HTML: safety comes from validation
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_config(settings: NginxSettings) -> str:
    """The whole configuration of Orchestry's own nginx."""
    context = _check(settings)
    environment = _environment()
    http_block = environment.get_template(HTTP_TEMPLATE).render(**context, external=False)
    return environment.get_template(TEMPLATE).render(**context, http_block=http_block.rstrip("\n"))


def render_include(settings: NginxSettings) -> str:
    """The file an existing nginx includes inside its `http { }` block (`nginx: external`).

    Only what Orchestry's routing needs, with names of its own (`orchestry_*`), so it sits beside the
    sites that nginx already serves; process-level settings (user, pid, modules, temp paths) stay theirs.
    """
    return _environment().get_template(HTTP_TEMPLATE).render(**_check(settings), external=True)
