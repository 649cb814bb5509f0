"""The reconcile sweep on a real database with a fake engine: drift becomes one job, and a node whose
fence ran out during the sweep writes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeRuntime
from sqlalchemy import select
from test_jobs_converge import desire, submit

from orchestry.controller.sweeps import reconcile_sweep
from orchestry.jobs.base import Fence, NotLeader
from orchestry.models import jobs as jobq
from orchestry.models.db import make_engine, make_sessionmaker


@pytest.fixture
def env(db_url: str) -> Iterator[tuple[Any, FakeRuntime, None]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine), FakeRuntime(), None
    engine.dispose()


def fence(valid: bool) -> Fence:
    return Fence("n", 1, lambda: time.monotonic() + 60 if valid else 0.0)


def jobs(sessions: Any) -> list[jobq.Job]:
    with sessions() as session:
        return list(session.scalars(select(jobq.Job)))


def test_drift_becomes_one_reconcile_job(env: Any) -> None:
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)  # running with 2 replicas desired, none in the engine
    assert len(reconcile_sweep(sessions, runtime, "c", fence(True))) == 1
    assert reconcile_sweep(sessions, runtime, "c", fence(True)) == []  # the job is there: nothing more
    (job,) = jobs(sessions)
    assert (job.kind, job.app_name, job.args) == ("reconcile", "web", {"why": job.args["why"]})


def test_a_node_whose_fence_ran_out_enqueues_nothing(env: Any) -> None:
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    with pytest.raises(NotLeader):
        reconcile_sweep(sessions, runtime, "c", fence(False))
    assert jobs(sessions) == []


def test_an_engine_that_does_not_answer_concludes_nothing(env: Any) -> None:
    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    runtime.down = True
    assert reconcile_sweep(sessions, runtime, "c", fence(True)) == []
    assert jobs(sessions) == []


def test_an_app_that_failed_after_the_sweep_read_it_gets_no_job(env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's first read saw the app running; its deploy then failed (job and app settled in one commit)
    before the sweep read the busy apps. The stale read must not become a reconcile job (CI saw one)."""
    from sqlalchemy import update

    from orchestry.controller import sweeps
    from orchestry.models.apps import App

    sessions, runtime, _ = env
    submit(sessions, "blue")
    desire(sessions, 2)
    with sessions() as session:
        stale = sweeps.app_states(session)
    with sessions.begin() as session:
        session.execute(update(App).where(App.name == "web").values(status="failed"))
    monkeypatch.setattr(sweeps, "app_states", lambda session: stale)
    assert reconcile_sweep(sessions, runtime, "c", fence(True)) == []
    assert jobs(sessions) == []
