"""Schemathesis (pinned in the dev extras) against a live `orchestry serve`: every operation of the OpenAPI
document, every check, bounded examples, 0 failures. The config (tests/schemathesis/schemathesis.toml)
names the few rules between fields that JSON Schema cannot state.

The server is the suite's own process (a leader, nginx, a real database); generated app names and images
do not exist, so the jobs they cause fail without starting a container.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Databases, LiveServer, start_server, stop_server

CONFIG = Path(__file__).parent / "schemathesis" / "schemathesis.toml"


LIVE_FIXTURES = ("fuzzed",)  # a live `orchestry serve` (conftest marks its tests live)


@pytest.fixture
def fuzzed(databases: Databases, tmp_path: Path) -> Iterator[LiveServer]:
    # Generated registry servers are nobody's: a login never asks them (no request leaves the machine).
    server = start_server(databases.migrated(), tmp_path, extra_env={"ORCHESTRY_REGISTRY_CHECK": "off"})
    try:
        yield server
    finally:
        stop_server(server)


def test_schemathesis_finds_no_mismatch(fuzzed: LiveServer, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "schemathesis"
    out = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{fuzzed.url}/api/v1/openapi.json",
            "--checks",
            "all",
            "--phases",
            "coverage,fuzzing",
            "--seed",
            "20261207",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    report = out.stdout[-20000:] + out.stderr[-5000:]
    assert out.returncode == 0, report
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", out.stdout)
    assert selected is not None and selected[1] == selected[2], report  # every operation of the document
