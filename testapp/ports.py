"""Free loopback ports for the tests' and benchmarks' servers (nginx, PostgreSQL, `orchestry serve`).

A port picked by binding port 0 comes from the kernel's ephemeral range, which the kernel also hands to every
outgoing connection and Docker to every port it publishes: between the pick and the server's bind, a
replica's published port or a client's socket can take it (nginx then fails with "Address already in use").
Ports below that range are never handed out by the kernel, so a free one stays free until a server asks.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
LOWEST = 10_000
_rng = random.Random()  # seeded from the OS: parallel test workers draw different ports


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def free_port() -> int:
    """A loopback port nobody listens on now, outside the ephemeral range when there is room below it."""
    low, _high = ephemeral_range()
    if low - LOWEST >= 1000:
        for _ in range(200):
            port = _rng.randrange(LOWEST, low)
            with socket.socket() as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below: the kernel's choice
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
