"""A new leader takes over the jobs its predecessor left running, on a real database (SQLite or PostgreSQL).

Found by bench/chaos: a job left running while its app already had a waiting job could not be requeued
(one waiting job per app, by a unique index), and that failure made every election of every node fail.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from orchestry.models import jobs as jobq
from orchestry.models.base import utcnow
from orchestry.models.cluster import Held, acquire_or_renew


def lead(sessions: sessionmaker[Session], node: str) -> int:
    with sessions.begin() as s:
        s.execute(text("UPDATE leader_lease SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
        held = acquire_or_renew(s, node, 30)
    assert isinstance(held, Held)
    return held.term


def test_a_running_job_whose_app_has_a_waiting_job_gives_way_to_it(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        busy = jobq.enqueue(s, "deploy", app_name="web", lock="web").job.id
        alone = jobq.enqueue(s, "scale", app_name="api", lock="api").job.id
    old = lead(sessions, "a")
    with sessions.begin() as s:
        claimed = {jobq.claim_next(s, node="a", term=old).id for _ in range(2)}  # type: ignore[union-attr]
    assert claimed == {busy, alone}
    with sessions.begin() as s:  # while `busy` runs, the user scales web: a waiting job of the same app
        waiting = jobq.enqueue(s, "scale", app_name="web", lock="web").job.id

    new = lead(sessions, "b")  # a dies; b takes over
    with sessions.begin() as s:
        assert jobq.requeue_abandoned(s, node="b", term=new) == [alone]
    with sessions.begin() as s:
        status = {j.id: (j.status, j.error) for j in s.query(jobq.Job)}
    assert status[alone] == ("queued", "its leader went away; requeued")
    assert status[busy][0] == "cancelled" and f"superseded by job {waiting}" in (status[busy][1] or "")
    assert status[waiting] == ("queued", None)
    with sessions.begin() as s:  # the new leader runs both
        assert {jobq.claim_next(s, node="b", term=new).id for _ in range(2)} == {alone, waiting}  # type: ignore[union-attr]
