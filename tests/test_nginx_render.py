"""The pure side of nginx: validation, the routing table and the rendered skeleton (plus `nginx -t` on it).

Hostile values must raise ValueError naming the setting and never reach a rendered configuration.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestry.nginx import validate
from orchestry.nginx.render import DEFAULT_MODULES, NginxSettings, render_config
from orchestry.nginx.routes import RouteTable, build_route_table, parse_route_table

PREFIX = Path("/srv/orchestry/nginx")
HOSTILE = [
    ";",
    "}",
    "{",
    "a;b",
    "x\ny",
    "x\rreturn 200",
    "$host",
    '"quoted"',
    "'quoted'",
    "../etc",
    "a b",
    "a\tb",
    "a#b",
    "a\\b",
    "\x00",
    "é",
    "x" * 5000,
    "",
]


def settings(**changes: Any) -> NginxSettings:
    return NginxSettings(prefix=PREFIX, **changes)


# --- validation ------------------------------------------------------------------------------------------

STRING_FIELDS = ["bind_address", "domain", "access_log", "user", "routes_dict_size", "max_routes_body"]
PATH_FIELDS = ["prefix", "routes_file", "lua_dir"]


@pytest.mark.parametrize("value", [*HOSTILE, "/ok/../../etc", "/a;b", "/a b", "/a}b", "/$x", "/a'b", '/a"b'])
@pytest.mark.parametrize("name", STRING_FIELDS + PATH_FIELDS)
def test_hostile_setting_raises_naming_it(name: str, value: str) -> None:
    fields: dict[str, Any] = {
        "prefix": PREFIX,
        name: Path(value) if name in PATH_FIELDS and value.startswith("/") else value,
    }
    with pytest.raises(ValueError, match=re.escape(name)):
        NginxSettings(**fields)


@pytest.mark.parametrize("value", [*HOSTILE, "/usr/lib/x.so;", "/usr/lib/../x.so"])
def test_hostile_module_path_raises(value: str) -> None:
    with pytest.raises(ValueError, match="modules"):
        settings(modules=(DEFAULT_MODULES[0], value))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("listen_port", 0),
        ("listen_port", 65536),
        ("listen_port", -1),
        ("listen_port", True),
        ("listen_port", "8080"),
        ("listen_port", 80.5),
        ("control_port", 70000),
        ("control_port", 8080),  # the listen port too
        ("upstream_keepalive", 0),
        ("worker_processes", 0),
        ("worker_processes", "auto; user root"),
        ("worker_connections", "1024;"),
        ("proxy_read_timeout", 0),
        ("proxy_read_timeout", float("nan")),
        ("proxy_read_timeout", float("inf")),
        ("proxy_read_timeout", "60s;"),
        ("proxy_connect_timeout", 300),
        ("error_log_level", "warn; user root"),
        ("routes_dict_size", "0"),
        ("routes_dict_size", "16g"),
        ("access_log", "syslog:server=example.com:514"),
        ("access_log", "syslog:server=127.0.0.1:514,tag=x;y"),
        ("access_log", "relative/path.log"),
        ("bind_address", "localhost"),
        ("bind_address", "127.000.0.1"),
        ("bind_address", "::1"),
        ("domain", "Example.com"),
        ("domain", "-bad.example"),
        ("domain", "a..b"),
        ("domain", "a." + "b" * 64),
        ("user", "Root"),
    ],
)
def test_out_of_range_setting_raises_naming_it(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        settings(**{name: value})


def test_a_value_forced_past_construction_still_never_renders() -> None:
    """Validation runs again at render time: a frozen dataclass can still be forced."""
    good = settings()
    object.__setattr__(good, "domain", "localhost; } server { listen 80")
    with pytest.raises(ValueError, match="domain"):
        render_config(good)


def test_replace_validates_again() -> None:
    with pytest.raises(ValueError, match="listen_port"):
        dataclasses.replace(settings(), listen_port=0)


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1:8080", "10.1.2.3:1", "255.255.255.255:65535"],
)
def test_good_addresses(value: str) -> None:
    assert validate.address(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "localhost:8080",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:080",
        "127.0.0.01:80",
        "256.0.0.1:80",
        "[::1]:80",
        "127.0.0.1:80;",
        "127.0.0.1:８０",
        "127.0.0.1:80\n",
        " 127.0.0.1:80",
        "1.2.3:80",
        None,
        8080,
        *HOSTILE,
    ],
)
def test_bad_addresses_raise(value: Any) -> None:
    with pytest.raises(ValueError, match="address"):
        validate.address(value)


@pytest.mark.parametrize("value", ["a", "web", "my-api", "a1", "1a", "x" * 63])
def test_good_app_names(value: str) -> None:
    assert validate.app_name(value) == value


@pytest.mark.parametrize("value", ["-a", "a-", "A", "a_b", "a.b", "x" * 64, "_orchestry", 7, *HOSTILE])
def test_bad_app_names_raise(value: Any) -> None:
    with pytest.raises(ValueError, match="app name"):
        validate.app_name(value)


def test_a_long_hostile_value_is_shortened_in_the_message() -> None:
    with pytest.raises(ValueError) as info:
        validate.app_name("x" * 100_000)
    assert len(str(info.value)) < 300


# --- the routing table -----------------------------------------------------------------------------------


def test_build_route_table_sorts_and_deduplicates() -> None:
    table = build_route_table(
        7, {"web": ["127.0.0.1:9000", "10.0.0.2:80", "127.0.0.1:10000", "127.0.0.1:9000"], "api": []}
    )
    assert table.generation == 7
    assert list(table.apps) == ["api", "web"]
    assert table.apps["web"] == ("10.0.0.2:80", "127.0.0.1:9000", "127.0.0.1:10000")
    assert table.apps["api"] == ()
    assert json.loads(table.to_json()) == {
        "generation": 7,
        "apps": {"api": [], "web": ["10.0.0.2:80", "127.0.0.1:9000", "127.0.0.1:10000"]},
    }
    assert parse_route_table(table.to_json()) == table


def test_route_table_is_read_only() -> None:
    table = build_route_table(1, {"web": ["127.0.0.1:80"]})
    with pytest.raises(TypeError):
        table.apps["evil"] = ("127.0.0.1:81",)  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.generation = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("generation", "healthy", "match"),
    [
        (-1, {}, "generation"),
        (True, {}, "generation"),
        ("1", {}, "generation"),
        (2**60, {}, "generation"),
        (1, {"Web": ["127.0.0.1:80"]}, "app name"),
        (1, {"web;": ["127.0.0.1:80"]}, "app name"),
        (1, {"web": ["localhost:80"]}, "address of web"),
        (1, {"web": ["127.0.0.1:80; return 200"]}, "address of web"),
        (1, {"web": "127.0.0.1:80"}, "not a string"),
    ],
)
def test_build_route_table_refuses(generation: Any, healthy: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_route_table(generation, healthy)


def test_parse_route_table_refuses_bad_shapes() -> None:
    for text in ('{"generation": 1}', '{"generation": 1, "apps": {"web": "127.0.0.1:80"}}', "[]"):
        with pytest.raises(ValueError):
            parse_route_table(text)


def test_empty_table() -> None:
    assert build_route_table(0, {}) == RouteTable(0)


# --- the rendered skeleton -------------------------------------------------------------------------------


def test_render_sets_every_path_under_the_prefix() -> None:
    text = render_config(settings(listen_port=9080, control_port=9081, domain="apps.example.com"))
    for directive in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{directive}_temp_path {PREFIX}/temp/{directive};" in text
    assert f"pid {PREFIX}/logs/nginx.pid;" in text
    assert f"error_log {PREFIX}/logs/error.log warn;" in text
    assert f"access_log {PREFIX}/logs/access.log orchestry;" in text
    assert f'routes_file = "{PREFIX}/routes.json"' in text
    assert 'domain = "apps.example.com"' in text
    # No system path except the modules; no include of /etc/nginx files.
    others = re.findall(r"(?<![\w/])/(?:etc|var|run|usr)/\S*", text)
    assert sorted(set(others)) == sorted(m + ";" for m in DEFAULT_MODULES)


def test_render_orders_what_nginx_needs_in_order() -> None:
    text = render_config(settings())
    assert text.index("ndk_http_module.so") < text.index("ngx_http_lua_module.so")
    upstream = text[text.index("upstream orchestry_replicas") :]
    assert upstream.index("balancer_by_lua_block") < upstream.index("keepalive 32;")
    assert "proxy_http_version 1.1;" in text
    # Upstream keep-alive: no Connection header but for a websocket's Upgrade (then "upgrade").
    assert "proxy_set_header Connection $orch_connection;" in text
    assert re.search(r'map \$http_upgrade \$orch_connection \{\s*default upgrade;\s*"" "";\s*\}', text)
    assert "proxy_next_upstream error timeout;" in text
    assert "non_idempotent" not in text.replace("Without non_idempotent", "")


def test_control_server_is_loopback_whatever_the_bind_address() -> None:
    text = render_config(settings(bind_address="0.0.0.0", listen_port=80, control_port=9999))
    assert "listen 0.0.0.0:80 default_server;" in text
    assert "listen 127.0.0.1:9999;" in text
    assert len(re.findall(r"^\s*listen ", text, flags=re.M)) == 2


def test_render_options() -> None:
    text = render_config(
        settings(
            access_log="syslog:server=127.0.0.1:5140",
            user="www-data",
            worker_processes=3,
            proxy_read_timeout=2.5,
            upstream_keepalive=8,
        )
    )
    assert "access_log syslog:server=127.0.0.1:5140 orchestry;" in text
    assert "user www-data;" in text
    assert "worker_processes 3;" in text
    assert "proxy_read_timeout 2500ms;" in text
    assert "keepalive 8;" in text
    assert "access_log off;" in render_config(settings(access_log="off"))
    assert "\nuser " not in render_config(settings())


def test_render_is_deterministic() -> None:
    assert render_config(settings()) == render_config(settings())


NGINX = shutil.which("nginx")
needs_nginx = pytest.mark.usefixtures("nginx_required")  # fails, never skips, when nginx is missing


@needs_nginx
def test_rendered_config_passes_nginx_t(tmp_path: Path) -> None:
    s = NginxSettings(prefix=tmp_path, listen_port=18080, control_port=18081, user="root")
    for directory in ("conf", "logs", "temp"):
        (tmp_path / directory).mkdir()
    s.conf_file.write_text(render_config(s))
    assert NGINX
    result = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(s.conf_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # nginx -t only warns about some mistakes (keepalive before balancer_by_lua_block, for one): none here.
    assert "[warn]" not in result.stderr, result.stderr


def test_traffic_counters_are_on_unless_turned_off() -> None:
    assert "count_traffic = true" in render_config(settings())
    assert "count_traffic = false" in render_config(settings(traffic_counters=False))


def test_https_is_a_second_server_only_with_a_tls_port() -> None:
    assert " ssl " not in render_config(settings()) and "ssl_certificate" not in render_config(settings())
    text = render_config(settings(tls_port=18443))
    tls = text[text.index("listen 127.0.0.1:18443 ssl default_server;") :]
    assert "ssl_certificate_by_lua_block" in tls and "certificate()" in tls
    assert f"ssl_certificate {PREFIX}/tls/fallback.crt;" in tls
    assert "add_header Strict-Transport-Security $orch_hsts always;" in tls
    plain = text[: text.index("listen 127.0.0.1:18443 ssl")]
    assert "Strict-Transport-Security" not in plain  # HSTS only over HTTPS
    assert "tls_port = 18443" in text  # the router builds redirects to it


@pytest.mark.parametrize("port", [18080, 18081])
def test_the_tls_port_must_differ_from_the_others(port: int) -> None:
    with pytest.raises(ValueError, match="tls_port"):
        settings(listen_port=18080, control_port=18081, tls_port=port)
