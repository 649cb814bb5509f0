"""The `orchestry` command against a real controller process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import EXAMPLES, LiveServer, hello, orchestry_cmd


def test_quick_start_register_list_read_back(live: LiveServer) -> None:
    hello_yaml = EXAMPLES / "hello.yaml"
    reg = live.cli("register", str(hello_yaml))
    assert reg.returncode == 0, reg.stderr
    assert "created" in reg.stdout

    listed = live.cli("list")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "STATUS", "TYPE", "REV"]
    assert row.split()[:4] == ["hello", "registered", "http", "1"]

    as_json = json.loads(live.cli("list", "--json").stdout)
    assert [a["name"] for a in as_json["apps"]] == ["hello"]

    raw = live.cli("spec", "hello", "--raw")
    assert raw.returncode == 0 and raw.stdout == hello_yaml.read_text()
    normalized = live.cli("spec", "hello")
    assert "revision 1" in normalized.stdout and "maxReplicas: 5" in normalized.stdout

    status = live.cli("status", "hello")
    assert status.returncode == 0 and "revision:" in status.stdout and "0 desired" in status.stdout

    again = live.cli("register", str(hello_yaml))
    assert again.returncode == 0 and "unchanged" in again.stdout


def test_register_several_files_revisions_events_delete(live: LiveServer, tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(hello("app-a"))
    b.write_text(hello("app-b"))
    assert live.cli("register", str(a), str(b)).returncode == 0
    a.write_text(hello("app-a", image="busybox:2"))
    assert "revised" in live.cli("register", str(a)).stdout

    revs = live.cli("revisions", "app-a")
    assert revs.returncode == 0 and "*2" in revs.stdout

    events = live.cli("events", "app-a")
    lines = events.stdout.splitlines()
    assert "app.revised" in lines[1] and "app.created" in lines[2]
    only_created = json.loads(live.cli("events", "--type", "app.created", "--json").stdout)["events"]
    assert {e["app"] for e in only_created} == {"app-a", "app-b"}
    assert len(json.loads(live.cli("events", "--limit", "1", "--json").stdout)["events"]) == 1

    deleted = live.cli("delete", "app-b", "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert "succeeded" in deleted.stdout
    assert "app.deleted" in live.cli("events", "app-b").stdout


def test_failures_are_one_message_and_exit_1(live: LiveServer, tmp_path: Path) -> None:
    missing = live.cli("status", "nope")
    assert missing.returncode == 1
    assert missing.stderr.startswith("orchestry: app 'nope' does not exist (HTTP 404)")

    bad = tmp_path / "bad.yaml"
    bad.write_text(hello("Bad_Name").replace("containerPort: 8080", "containerPort: 70000"))
    out = live.cli("register", str(bad))
    assert out.returncode == 1
    assert "metadata.name" in out.stderr and "spec.ports[0].containerPort" in out.stderr
    assert "Traceback" not in out.stderr

    unknown = tmp_path / "extra.yaml"
    unknown.write_text(hello("extra") + "sidecar: 1\n")
    strict = live.cli("register", "--strict", str(unknown))
    assert strict.returncode == 1 and "sidecar" in strict.stderr
    lenient = live.cli("register", str(unknown))
    assert lenient.returncode == 0 and "warning: sidecar" in lenient.stdout

    nofile = live.cli("register", str(tmp_path / "absent.yaml"))
    assert nofile.returncode == 1 and "cannot read" in nofile.stderr


def test_bad_usage_exits_2(live: LiveServer) -> None:
    for argv in (["frobnicate"], ["scale", "web"], ["events", "--limit", "x"], []):  # `status` alone: the system
        out = live.cli(*argv)
        assert out.returncode == 2, argv
        assert "Traceback" not in out.stderr


def test_unreachable_controller_is_a_message_not_a_traceback() -> None:
    out = subprocess.run(orchestry_cmd("list", "--url", "http://127.0.0.1:1"), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("orchestry: cannot reach the controller at http://127.0.0.1:1")
    assert "Traceback" not in out.stderr


def test_cli_falls_over_to_the_next_controller(live: LiveServer) -> None:
    out = live.cli("list", "--url", f"http://127.0.0.1:1,{live.url}")
    assert out.returncode == 0, out.stderr


def test_config_shows_where_each_value_comes_from(live: LiveServer, tmp_path: Path) -> None:
    cfg = tmp_path / "orchestry.yaml"
    cfg.write_text("port: 9100\nmax_replicas: 20\n")
    out = live.cli("config", "--json", "--config", str(cfg), env={"ORCHESTRY_PORT": "9200"})
    assert out.returncode == 0, out.stderr
    settings = json.loads(out.stdout)["settings"]
    assert settings["port"] == {"value": 9200, "source": "env", "env": "ORCHESTRY_PORT"}
    assert settings["max_replicas"]["value"] == 20 and settings["max_replicas"]["source"] == "file"
    assert settings["url"]["source"] == "env"  # the fixture sets ORCHESTRY_URL
    human = live.cli("config")
    assert "controller:" in human.stdout and live.url in human.stdout

    bad = live.cli("config", env={"ORCHESTRY_PORT": "eighty"})
    assert bad.returncode == 2 and "ORCHESTRY_PORT: must be an integer" in bad.stderr
