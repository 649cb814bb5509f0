"""Configuration, documented in one place.

Every setting is declared once in `SETTINGS` with its type, default and help. The value in force comes
from the highest layer that sets it:

    defaults  <  config file  <  ORCHESTRY_* environment  <  command-line flags

The config file is YAML (`--config PATH`, else `ORCHESTRY_CONFIG`, else
`$XDG_CONFIG_HOME/orchestry/config.yaml`); a missing default file is fine, a missing named one is an error.
`orchestry config` prints every value and the layer it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestry.workflows.lease import margin_seconds


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting and its source."""


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "orchestry"


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "orchestry"


def _to_int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be an integer")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    if not text.lstrip("-").isdigit():
        raise ValueError("must be an integer")
    return int(text)


def _to_str(raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise ValueError("must be a string")
    return str(raw)


def _positive_float(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError("must be a number")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def _to_name(raw: Any) -> str:
    text = _to_str(raw)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", text):
        raise ValueError("must be lowercase letters, digits and '-', at most 32 characters")
    return text


def _to_choice(*choices: str) -> Callable[[Any], str]:
    def convert(raw: Any) -> str:
        text = _to_str(raw).lower()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return convert


@dataclass(frozen=True)
class Setting:
    """One configuration key; its environment variable is ORCHESTRY_<NAME upper-cased>."""

    name: str
    convert: Callable[[Any], Any]
    default: Callable[[dict[str, Any]], Any]
    help: str

    @property
    def env(self) -> str:
        return "ORCHESTRY_" + self.name.upper()


def _at_most(limit: float) -> Callable[[Any], float]:
    def check(raw: Any) -> float:
        value = _positive_float(raw)
        if value > limit:
            raise ValueError(f"must be at most {limit:g}")
        return value

    return check


def _port_check(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _to_abs_path(raw: Any) -> str:
    """An absolute path that is safe to hand to nginx (the same rule as nginx/validate.py's)."""
    text = _to_str(raw)
    if not text.startswith("/") or ".." in text.split("/"):
        raise ValueError("must be an absolute path without '..'")
    if not re.fullmatch(r"[A-Za-z0-9/_.,:@%+=~-]{1,4096}", text):
        raise ValueError("must be letters, digits and '/_.,:@%+=~-' only (no spaces, quotes, ';{}$#')")
    return text


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be >= 1")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "data_dir",
        _to_str,
        lambda _: str(_data_home()),
        "Directory for Orchestry's own files (SQLite database, nginx prefix).",
    ),
    Setting(
        "database_url",
        _to_str,
        lambda s: f"sqlite:///{Path(s['data_dir']) / 'orchestry.db'}",
        "SQLAlchemy URL of the state database. PostgreSQL is what several controllers share.",
    ),
    Setting(
        "host",
        _to_str,
        lambda _: "127.0.0.1",
        "Address the API binds. A non-loopback address needs at least one API token.",
    ),
    Setting("port", lambda raw: _port_check(_to_int(raw)), lambda _: 8000, "Port the API listens on."),
    Setting(
        "url",
        _to_str,
        lambda s: f"http://{_client_host(s['host'])}:{s['port']}",
        "Where the CLI finds the controller (several, comma-separated: tried in order).",
    ),
    Setting("token", _to_str, lambda _: "", "API token the CLI sends (Authorization: Bearer)."),
    Setting(
        "node_id", _to_str, lambda s: f"{os.uname().nodename}-{s['port']}", "This controller's name in the cluster."
    ),
    Setting("max_replicas", lambda raw: _positive(_to_int(raw)), lambda _: 50, "Most replicas any app may ask for."),
    Setting(
        "max_spec_bytes",
        lambda raw: _positive(_to_int(raw)),
        lambda _: 1024 * 1024,
        "Largest request body the API reads (app specs included).",
    ),
    Setting("threads", lambda raw: _positive(_to_int(raw)), lambda _: 8, "API worker threads."),
    Setting(
        "cluster_name",
        _to_name,
        lambda _: "orchestry",
        "Prefix of container names and owner label: Orchestry never touches containers of another name.",
    ),
    Setting(
        "lease_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 2.5,
        "How long the leader's lease lasts without renewal (failover time after a crash).",
    ),
    Setting(
        "renew_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 0.5,
        "How often the leader renews, and the longest a follower waits before trying to take the lease.",
    ),
    Setting(
        "reconcile_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 10.0,
        "Period of the full reconcile (Docker events trigger it sooner).",
    ),
    Setting("job_workers", lambda raw: _positive(_to_int(raw)), lambda _: 8, "Jobs run at once on the leader."),
    Setting("log_level", _to_choice("debug", "info", "warning", "error"), lambda _: "info", "Log level."),
    Setting(
        "log_format",
        _to_choice("text", "json"),
        lambda _: "text",
        "`json` writes one JSON object per log line, for machines.",
    ),
    Setting(
        "nginx",
        _to_choice("managed", "external", "off"),
        lambda _: "managed",
        "`managed`: the leader runs its own nginx (Debian's, with the Lua module); `external`: an existing nginx "
        "includes Orchestry's file (nginx_conf, nginx_include, nginx_reload_command); `off`: no routing.",
    ),
    Setting(
        "runtime",
        _to_choice("docker", "swarm"),
        lambda _: "docker",
        "`docker`: replicas are containers on one Docker engine; `swarm`: each replica slot is a Docker Swarm "
        "service, placed on the swarm's nodes (the engine must be a Swarm manager).",
    ),
    Setting(
        "docker_host",
        _to_str,
        lambda _: "",
        "The Docker engine (or Swarm manager) Orchestry drives, e.g. `unix:///run/docker.sock`; empty: "
        "DOCKER_HOST, else the local engine.",
    ),
    Setting("nginx_binary", _to_str, lambda _: "nginx", "The nginx binary (a name on PATH or a path)."),
    Setting(
        "nginx_conf",
        _to_abs_path,
        lambda _: "/etc/nginx/nginx.conf",
        "`external`: the existing nginx's main configuration (tested with `nginx -t -c` before each reload).",
    ),
    Setting(
        "nginx_include",
        _to_abs_path,
        lambda _: "/etc/nginx/conf.d/orchestry.conf",
        "`external`: the file Orchestry writes, included by nginx_conf inside `http { }`.",
    ),
    Setting(
        "nginx_reload_command",
        _to_str,
        lambda _: "",
        "`external`: command that reloads the existing nginx (run without a shell); empty: "
        "`<nginx_binary> -c <nginx_conf> -s reload`.",
    ),
    Setting("proxy_host", _to_str, lambda _: "127.0.0.1", "Address nginx listens on for app traffic."),
    Setting("proxy_port", lambda raw: _port_check(_to_int(raw)), lambda _: 8080, "Port nginx listens on."),
    Setting(
        "nginx_control_port",
        lambda raw: _port_check(_to_int(raw)),
        lambda _: 8081,
        "Loopback port of nginx's control endpoint (the routing table is pushed there).",
    ),
    Setting(
        "proxy_tls_port",
        lambda raw: 0 if _to_int(raw) == 0 else _port_check(_to_int(raw)),
        lambda _: 8443,
        "Port nginx serves HTTPS on (certificates chosen per handshake by SNI); 0: no HTTPS.",
    ),
    Setting(
        "acme_directory_url",
        _to_str,
        lambda _: "https://acme-staging-v02.api.letsencrypt.org/directory",
        "ACME directory for `tls: auto` routes (Let's Encrypt staging by default; production: "
        "https://acme-v02.api.letsencrypt.org/directory).",
    ),
    Setting("acme_email", _to_str, lambda _: "", "Contact e-mail of the ACME account (optional)."),
    Setting(
        "acme_ca_file",
        _to_str,
        lambda _: "",
        "A CA bundle to trust for the ACME directory's own HTTPS (a test CA such as pebble's); empty: the system's.",
    ),
    Setting("domain", _to_str, lambda _: "localhost", "Apps answer at <app>.<domain> (and at /<app>/)."),
    Setting(
        "routes_stale_seconds",
        _at_most(3600),
        lambda _: 10.0,
        "nginx's /_orchestry/ready answers 503 (for a load balancer) once this node's controller has not "
        "confirmed its routing table for this long.",
    ),
    Setting(
        "health_sweep_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 0.5,
        "How often the leader looks for replicas due a health check (each app's periodSeconds applies).",
    ),
    Setting(
        "metrics_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 2.0,
        "How often the leader samples every replica's CPU and memory and every app's traffic.",
    ),
    Setting(
        "autoscale_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 5.0,
        "How often the leader evaluates every app in auto mode (a surge is acted on after each metrics sample).",
    ),
    Setting(
        "metrics_retention_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 86400.0,
        "How long metric samples are kept.",
    ),
    Setting(
        "metrics_full_resolution_seconds",
        lambda raw: _positive_float(raw),
        lambda _: 3600.0,
        "How long samples are kept as taken; after it an app's are kept as one mean a minute, a replica's go.",
    ),
    Setting(
        "registry_check",
        _to_choice("ask", "off"),
        lambda _: "ask",
        "`ask`: `registry login` asks the registry whether it takes the credentials before storing them; `off`: "
        "never (registries only the Docker engines reach; the API's check=false does it for one login).",
    ),
    Setting(
        "secret_key",
        _to_str,
        lambda _: "",
        "Key that encrypts secrets (a Fernet key: `orchestry secret keygen`). Empty: <data_dir>/secret.key, "
        "generated (mode 0600) on first use with SQLite; with PostgreSQL set it, the same on every node.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


@dataclass(frozen=True)
class Settings:
    """The values in force, and for each the layer that set it (default, file, env or flag)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    config_file: str | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def urls(self) -> list[str]:
        return [u.strip().rstrip("/") for u in str(self.values["url"]).split(",") if u.strip()]


def _read_file(path: Path) -> dict[str, Any]:
    # Imported here: without a config file, `scripts/deps` (run by every `make run`) starts faster.
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror})") from None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must be a mapping of setting names to values")
    unknown = sorted(set(map(str, data)) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Resolve every setting through the four layers; raise ConfigError naming the bad one."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    explicit = config_path or env.get("ORCHESTRY_CONFIG")
    path = Path(explicit) if explicit else _config_home() / "config.yaml"
    file_values: dict[str, Any] = {}
    if explicit or path.exists():
        file_values = _read_file(path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:  # in order: later defaults may depend on earlier values
        layers = (
            ("flag", flags.get(setting.name)),
            ("env", env.get(setting.env)),
            ("file", file_values.get(setting.name)),
        )
        source, raw = next(((s, v) for s, v in layers if v is not None and v != ""), ("default", None))
        if source == "default":
            values[setting.name] = setting.default(values)
        else:
            try:
                values[setting.name] = setting.convert(raw)
            except ValueError as exc:
                where = {
                    "flag": f"--{setting.name.replace('_', '-')}",
                    "env": setting.env,
                    "file": f"{setting.name} in {path}",
                }[source]
                raise ConfigError(f"{where}: {exc}") from None
        sources[setting.name] = source
    _check_together(values, sources)
    return Settings(values=values, sources=sources, config_file=str(path) if file_values else None)


def _check_together(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Rules between settings. The leader's fence ends a fifth of the lease (at most 1 s) before the lease
    does; a renewal must come before that, or the leader would stop acting between two renewals."""
    lease, renew = values["lease_seconds"], values["renew_seconds"]
    margin = margin_seconds(lease)
    if renew >= lease - margin:
        raise ConfigError(
            f"renew_seconds ({renew:g}, {sources['renew_seconds']}): must be less than lease_seconds ({lease:g}) "
            f"minus its safety margin ({margin:g} s), i.e. < {lease - margin:g}"
        )
