"""Local HTTP endpoints for bench/health_sweep, served by a child process so that they do not share the
benchmark's CPU time slice (GIL) with the prober being measured.

Run as `python _probe_targets.py --ports N`: it listens on N ephemeral loopback ports, prints them as one
JSON line, and serves until its stdin closes (the parent exits or hangs up) or `--max-seconds` pass.
Any path starting with `/hang` is read and never answered (held until the client hangs up); any other
path answers `200 ok` and closes the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def raise_fd_limit() -> None:
    """1,000 listening sockets and as many connections need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
        if path.startswith(b"/hang"):
            await reader.read()  # until the client gives up
        else:
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(ports: int, max_seconds: float) -> None:
    servers = [await asyncio.start_server(handle, HOST, 0, backlog=4096) for _ in range(ports)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    loop, hung_up = asyncio.get_running_loop(), asyncio.Event()

    def watch_stdin() -> None:  # a daemon thread: a blocked read must not keep the process alive
        sys.stdin.read()
        loop.call_soon_threadsafe(hung_up.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hung_up.wait(), max_seconds)
    for server in servers:
        server.close()


@contextlib.contextmanager
def endpoints(ports: int, max_seconds: float = 900.0) -> Iterator[list[int]]:
    """Start the endpoint process; yields its ports; stops it on exit, whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--ports", str(ports), "--max-seconds", str(max_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the endpoint process exited with {proc.wait()}")
        yield [int(p) for p in json.loads(line)]
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop after this long in any case")
    args = parser.parse_args()
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.ports, args.max_seconds))


if __name__ == "__main__":
    main()
