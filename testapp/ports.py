"""Free loopback ports for the tests' and benchmarks' servers (nginx, PostgreSQL, `orchestry serve`).

One allocator per process, and it never hands out a port twice: a port picked earlier may still be free
when asked again (its server not started yet), and two servers given one port fail ("control_port: 19398 is
the listen port too"). Each pytest-xdist worker draws from a slice of its own (by worker id), so workers of
one run never meet either. Which slice a worker id gets is turned by the run's id (PYTEST_XDIST_TESTRUNUID,
the same in every worker of a run), so concurrent runs on one machine mostly draw from different slices, and a
bind check skips ports that someone else holds.

Ports come from below the kernel's ephemeral range: a port picked by binding port 0 comes from the range the
kernel also hands to every outgoing connection and Docker to every port it publishes, so between the pick
and the server's bind a replica's published port or a client's socket could take it. Ports below that range
are never handed out by the kernel, so a free one stays free until a server asks.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import zlib
from pathlib import Path

HOST = "127.0.0.1"
LOWEST = 10_000
SLICES = 16  # pytest-xdist workers gw0..gw15 get disjoint slices; more workers share them modulo 16


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def worker_index(worker: str | None) -> int | None:
    """pytest-xdist's worker id (`gw3`) as a number; None outside a worker (a plain pytest run, a bench)."""
    if not worker:
        return None
    found = re.fullmatch(r"gw(\d+)", worker)
    return int(found.group(1)) if found else None


def port_slice(index: int | None, low: int, high: int, slices: int = SLICES, turn: int = 0) -> range:
    """The ports [low, high) one worker draws from: slice `(index + turn) % slices`, or all for no worker.
    `turn` is the same for every worker of a run, so their slices stay apart."""
    if index is None:
        return range(low, high)
    size = (high - low) // slices
    start = low + ((index + turn) % slices) * size
    return range(start, start + size)


def run_turn(run_id: str | None, slices: int = SLICES) -> int:
    """A run's turn of the slices, from its id (stable across processes, unlike hash())."""
    return zlib.crc32(run_id.encode()) % slices if run_id else 0


class PortAllocator:
    """Walks its slice from a random start (so concurrent runs on one machine rarely try the same ports),
    skipping ports that do not bind, and never returns one twice."""

    def __init__(self, ports: range, rng: random.Random | None = None) -> None:
        if not ports:
            raise ValueError("an empty port range")
        self.ports = ports
        self._next = (rng or random.Random()).randrange(len(ports))
        self._tried = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while self._tried < len(self.ports):
                port = self.ports[self._next]
                self._next = (self._next + 1) % len(self.ports)
                self._tried += 1
                if _binds(port):
                    return port
        raise RuntimeError(f"no free port left in {self.ports.start}-{self.ports.stop - 1}: each is handed out once")


def _binds(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


_allocator: PortAllocator | None = None
_allocator_lock = threading.Lock()


def allocator() -> PortAllocator:
    """This process's allocator, made on first use (in a pytest-xdist worker, PYTEST_XDIST_WORKER is set)."""
    global _allocator
    with _allocator_lock:
        if _allocator is None:
            low, _high = ephemeral_range()
            top = low if low - LOWEST >= 1000 else 65536  # no room below the ephemeral range: the bind check only
            index = worker_index(os.environ.get("PYTEST_XDIST_WORKER"))
            turn = run_turn(os.environ.get("PYTEST_XDIST_TESTRUNUID"))
            _allocator = PortAllocator(port_slice(index, LOWEST, top, turn=turn))
        return _allocator


def free_port() -> int:
    """A loopback port nobody listens on now and that this process never handed out before."""
    return allocator().take()
