"""Keep a test-app replica's CPU busy: clients call its `/burn` endpoint back to back until told to stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


@contextmanager
def burning(url: str, clients: int = 2, ms: int = 300) -> Iterator[list[int]]:
    """`url` is the replica's base URL; yields a one-item list counting the completed burns."""
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    if http.get(f"{url}/burn", params={"ms": ms}).status_code == 200:
                        done[0] += 1
                except httpx.HTTPError:
                    stop.wait(0.05)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield done
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
