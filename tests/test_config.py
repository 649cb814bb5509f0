"""Configuration layers: defaults < config file < ORCHESTRY_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestry.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("file", "env", "flags", "expected", "source"),
    [
        (None, {}, {}, 8000, "default"),
        ("port: 8100\n", {}, {}, 8100, "file"),
        ("port: 8100\n", {"ORCHESTRY_PORT": "8200"}, {}, 8200, "env"),
        ("port: 8100\n", {"ORCHESTRY_PORT": "8200"}, {"port": 8300}, 8300, "flag"),
        (None, {"ORCHESTRY_PORT": ""}, {}, 8000, "default"),
    ],
)
def test_precedence(
    tmp_path: Path, file: str | None, env: dict[str, str], flags: dict[str, int], expected: int, source: str
) -> None:
    path = tmp_path / "c.yaml"
    if file is not None:
        path.write_text(file)
    settings = load_settings(flags, env={**env, "ORCHESTRY_CONFIG": str(path)} if file else env)
    assert settings.port == expected
    assert settings.sources["port"] == source


def test_defaults_follow_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(env={"ORCHESTRY_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'orchestry.db'}"
    assert settings.host == "127.0.0.1"
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.max_replicas == 50


@pytest.mark.parametrize(
    ("env", "file", "message"),
    [
        ({"ORCHESTRY_PORT": "x"}, None, "ORCHESTRY_PORT: must be an integer"),
        ({"ORCHESTRY_PORT": "70000"}, None, "ORCHESTRY_PORT: must be between 1 and 65535"),
        ({"ORCHESTRY_LOG_FORMAT": "xml"}, None, "ORCHESTRY_LOG_FORMAT: must be one of text, json"),
        ({}, "nonsense: 1\n", "unknown setting(s) nonsense"),
        ({}, "- a list\n", "must be a mapping"),
        ({}, "port: [1\n", "not valid YAML"),
        ({}, "max_replicas: true\n", "max_replicas in"),
        ({"ORCHESTRY_RENEW_SECONDS": "2"}, None, "renew_seconds (2, env): must be less than lease_seconds (2.5)"),
        ({"ORCHESTRY_LEASE_SECONDS": "1", "ORCHESTRY_RENEW_SECONDS": "0.9"}, None, "i.e. < 0.8"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env: dict[str, str], file: str | None, message: str) -> None:
    path = tmp_path / "c.yaml"
    if file is not None:
        path.write_text(file)
        env = {**env, "ORCHESTRY_CONFIG": str(path)}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(env=env)


def test_a_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(config_path=str(tmp_path / "absent.yaml"))
