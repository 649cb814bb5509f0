"""web/sse.py: server-sent events from a blocking iterator, with keepalives (pure threads and queues)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from orchestry.web.sse import event_lines, event_stream


class Source:
    """A blocking source, as a followed log is: items put by the test; `close()` ends it (from any thread)."""

    def __init__(self) -> None:
        self.items: queue.Queue[str | None] = queue.Queue()
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self.items.get()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.closed.set()
        self.items.put(None)


@pytest.mark.parametrize(
    ("text", "event"),
    [
        ("one line\n", "data: one line\n\n"),
        ("no newline", "data: no newline\n\n"),
        ("two\nlines", "data: two\ndata: lines\n\n"),
        ("carriage\r\nreturn\rhere", "data: carriage\ndata: return\ndata: here\n\n"),
        ("", "data: \n\n"),
    ],
)
def test_a_text_is_one_event(text: str, event: str) -> None:
    assert event_lines(text) == event


def test_items_become_events_and_silence_becomes_keepalives() -> None:
    source = Source()
    finished = threading.Event()

    def finish() -> None:
        finished.set()
        source.close()

    body = event_stream(iter(source), str.upper, finish, keepalive=0.05)
    assert next(body) == "retry: 5000\n\n"
    source.items.put("hello")
    assert next(body) == "data: HELLO\n\n"
    assert next(body) == ": keepalive\n\n"  # nothing came: a comment, so a client that left is noticed
    source.items.put("again\n")
    assert next(body) == "data: AGAIN\n\n"
    body.close()  # the server closes the response (the client left)
    assert finished.is_set() and source.closed.is_set()


def test_the_stream_ends_when_its_source_does() -> None:
    source = Source()
    finished = threading.Event()
    body = event_stream(iter(source), str, finished.set, keepalive=5)
    source.items.put("last")
    source.items.put(None)
    assert list(body) == ["retry: 5000\n\n", "data: last\n\n"]
    assert finished.is_set()


def test_a_source_error_named_ends_the_stream_quietly() -> None:
    def broken() -> Iterator[str]:
        yield "one"
        raise ConnectionError("the engine went away")

    body = event_stream(broken(), str, lambda: None, keepalive=5, ended=(ConnectionError,))
    assert list(body) == ["retry: 5000\n\n", "data: one\n\n"]


def test_a_slow_client_holds_back_the_reader_not_memory() -> None:
    """The reader reads at most BACKLOG items ahead; closing the body frees it even while it waits."""
    from orchestry.web import sse

    produced: list[int] = []

    def endless() -> Iterator[str]:
        n = 0
        while True:
            produced.append(n)
            yield str(n)
            n += 1

    finished = threading.Event()
    body = event_stream(endless(), str, finished.set, keepalive=5)
    next(body)
    time.sleep(0.3)
    assert sse.BACKLOG <= len(produced) <= sse.BACKLOG + 2
    assert next(body) == "data: 0\n\n"
    body.close()
    assert finished.is_set()
