"""A pull's progress as job steps: the throttle and the line (pure), the step recorder with a clock of our own,
and the engine's progress stream read into updates. The real pull through a slow registry is in
tests/test_private_registry.py."""

from __future__ import annotations

from typing import Any

import pytest

from orchestry.jobs.pull_progress import ProgressSteps
from orchestry.runtime.docker_engine import PullError, PullProgress
from orchestry.runtime.types import PullUpdate
from orchestry.workflows.registry import progress_due, pull_progress


@pytest.mark.parametrize(
    ("last_at", "now", "changed", "due"),
    [
        (10.0, 10.2, True, False),  # too soon
        (10.0, 11.0, True, True),  # a second later, and it moved
        (10.0, 15.0, False, False),  # a stalled pull writes nothing new
        (10.0, 10.99, True, False),
    ],
)
def test_progress_due(last_at: float, now: float, changed: bool, due: bool) -> None:
    assert progress_due(last_at, now, changed) is due


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ((5, 2, 12_300_000, 40_100_000), "2/5 layers, 12.3 MB of 40.1 MB"),
        ((1, 0, 512, 2048), "0/1 layer, 512 B of 2.0 kB"),
        ((3, 1, 0, 0), "1/3 layers"),  # sizes not announced yet
    ],
)
def test_pull_progress_line(args: tuple[int, int, int, int], line: str) -> None:
    assert pull_progress(*args) == line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def update(done: int, size: int = 100) -> PullUpdate:
    return PullUpdate("reg:5000/app:1", layers=2, layers_done=0, bytes_done=done, bytes_total=size)


def test_progress_steps_are_throttled_and_stop_with_the_pull() -> None:
    clock, steps = Clock(), []

    def step(name: str, status: str = "ok", **detail: Any) -> None:
        steps.append({"step": name, "status": status, **detail})

    progress = ProgressSteps("reg:5000/app:1", step, clock, registry="reg:5000")
    progress.began()
    assert steps == [{"step": "pulling reg:5000/app:1", "status": "running", "registry": "reg:5000"}]
    for at, done in ((100.3, 10), (100.9, 20), (101.0, 30), (101.5, 40), (102.1, 40), (102.2, 50), (103.3, 60)):
        clock.now = at
        progress(update(done))
    # 101.0 (a second after the start), 102.1 (moved since 101.0's step), 103.3; the others came too soon.
    written = [(s["bytes_done"], s["progress"]) for s in steps[1:]]
    assert written == [
        (30, "0/2 layers, 30 B of 100 B"),
        (40, "0/2 layers, 40 B of 100 B"),
        (60, "0/2 layers, 60 B of 100 B"),
    ]
    assert progress.written == 3
    progress.close()
    clock.now = 200.0
    progress(update(99))
    assert len(steps) == 4


def test_the_engine_stream_becomes_updates() -> None:
    seen: list[PullUpdate] = []
    events = [
        {"status": "Pulling from app", "id": "1"},
        {"status": "Already exists", "id": "a"},
        {"status": "Pulling fs layer", "id": "b"},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 100, "total": 1000}},
        {"status": "Downloading", "id": "b", "progressDetail": {"current": 600, "total": 1000}},
        {"status": "Download complete", "id": "b"},
        {"status": "Extracting", "id": "b", "progressDetail": {"current": 1, "total": 1000}},
        {"status": "Pull complete", "id": "b"},
        {"status": "Digest: sha256:abc"},
    ]
    reader = PullProgress("reg:5000/app:1", seen.append)
    reader.follow(events)
    assert [(u.layers, u.layers_done, u.bytes_done, u.bytes_total) for u in seen] == [
        (1, 1, 0, 0),
        (2, 1, 0, 0),
        (2, 1, 100, 1000),
        (2, 1, 600, 1000),
        (2, 1, 1000, 1000),
        (2, 2, 1000, 1000),
    ]
    summary = reader.summary(1.5)
    assert (summary.layers, summary.downloaded, summary.bytes, summary.digest) == (2, 1, 1000, "sha256:abc")
    with pytest.raises(PullError, match="denied"):
        PullProgress("x").follow([{"error": "x", "errorDetail": {"message": "denied"}}])


def test_a_refused_progress_write_skips_that_report_not_the_pull() -> None:
    from sqlalchemy.exc import OperationalError

    from orchestry.jobs.base import NotLeader

    clock, calls = Clock(), []

    def busy(name: str, status: str = "ok", **detail: Any) -> None:
        calls.append(detail.get("bytes_done"))
        if detail.get("bytes_done") == 10:
            raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))
        if detail.get("bytes_done") == 30:
            raise NotLeader("lost the lease")

    progress = ProgressSteps("reg:5000/app:1", busy, clock)
    clock.now = 101.0
    progress(update(10))  # refused: skipped
    clock.now = 102.0
    progress(update(20))
    clock.now = 103.0
    with pytest.raises(NotLeader):  # the job must stop: the pull with it
        progress(update(30))
    assert calls == [10, 20, 30] and progress.written == 1
