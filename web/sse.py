"""Server-sent events from a blocking iterator (the dashboard's log follow).

A stream that only writes when its source yields never learns that its client left while nothing comes, and
keeps its request thread and its follow slot (web/logs.py) until the next line. Here the source is read by a
thread of its own into a bounded queue, and the response writes a comment line every `keepalive` seconds
of silence: the write to a closed connection fails, the server closes the response, and `finish` ends the
source and gives the slot back.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
RETRY_MS = 5000  # how long a browser waits before it reconnects a stream that ended
BACKLOG = 1000  # items read ahead of a slow client; the reader then waits (memory stays bounded)
_END = object()


def event_lines(text: str) -> str:
    """One event whose data is `text` (a line break in it becomes another `data:` line of the same event)."""
    parts = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    return "".join(f"data: {part}\n" for part in parts) + "\n"


def event_stream(
    source: Iterator[T],
    render: Callable[[T], str],
    finish: Callable[[], None],
    keepalive: float,
    ended: tuple[type[BaseException], ...] = (),
) -> Generator[str, None, None]:
    """The response body: a `retry:` line, then an event per item (`render` gives its text) and a comment
    after each `keepalive` seconds without one. Ends when the source does (or raises one of `ended`); the
    body's close (the client left, the server stopped) calls `finish`, which must end the source."""
    items: queue.Queue[object] = queue.Queue(BACKLOG)
    stopped = threading.Event()

    def offer(item: object) -> bool:
        """Queue `item`, waiting while the backlog is full; False once the body was closed."""
        while not stopped.is_set():
            try:
                items.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in source:
                if not offer(item):
                    return
        except ended:
            pass
        finally:
            offer(_END)

    reader = threading.Thread(target=pump, name="orchestry-sse", daemon=True)

    def body() -> Generator[str, None, None]:
        reader.start()
        try:
            yield f"retry: {RETRY_MS}\n\n"
            while True:
                try:
                    item = items.get(timeout=keepalive)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if item is _END:
                    return
                yield event_lines(render(item))  # type: ignore[arg-type]
        finally:
            stopped.set()
            finish()

    return body()
