"""The server's heap: start-up's objects are frozen out of the collector's full passes (config/heap.py)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import LiveServer

SETTLE = """
import gc
from orchestry.config.heap import settle_heap
import orchestry.web.app, orchestry.controller.node  # what a server imports
before = gc.get_freeze_count()
frozen = settle_heap()
print(before, frozen, gc.get_count()[2])
"""


def test_settling_freezes_what_start_up_built() -> None:
    out = subprocess.run([sys.executable, "-c", SETTLE], capture_output=True, text=True, check=True).stdout
    before, frozen, old = out.split()
    assert int(before) == 0
    assert int(frozen) > 50_000  # modules, classes and functions: never garbage, no longer scanned
    assert int(old) == 0  # nothing left in the oldest generation for a full collection to scan


def test_a_server_settles_its_heap_before_it_serves(live_server: LiveServer) -> None:
    line = next(line for line in live_server.log().splitlines() if "orchestry listening" in line)
    frozen = re.search(r"heap_frozen=(\d+)", line)
    assert frozen is not None and int(frozen[1]) > 50_000, line
