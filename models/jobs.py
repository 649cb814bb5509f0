"""Jobs: Orchestry's own queue and its history. The row is the truth, not the scheduler's memory.

`lock` names what an operation works on (the app). Two partial unique indexes let at most one job per
lock wait and at most one run, so "one live operation per app" is enforced by the database: a second
request of the same kind joins the waiting job (handlers read the desired state when they run, so the
latest request wins), a request of another kind supersedes it. An idempotency key makes a repeated
request return the job it created.

Claims are fenced: a job is claimed only while the claimant holds the leader lease at the given term, and
a finished job is recorded only if it is still claimed by that node and term.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, and_, exists, func, or_, select, text, update
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from orchestry.models.base import Base, affected, utcnow
from orchestry.models.cluster import holds_lease

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LIVE_STATUSES = ("queued", "running")
# Every kind a job row may hold: jobs/registry.py maps each to its handler (a test keeps the two the same).
# The API's and the dashboard's `kind` filter accept these (web/ may not import jobs/).
JOB_KINDS = (
    "deploy",
    "scale",
    "stop",
    "delete",
    "reconcile",
    "rollback",
    "restart",
    "health-check",
    "cert-issue",
    "host-drain",
    "host-activate",
    "webhook-deliver",
    "noop",
)
NOTIFY_CHANNEL = "orchestry_jobs"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_queued_lock",
            "lock",
            unique=True,
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index(
            "uq_jobs_running_lock",
            "lock",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index("ix_jobs_status_run_after", "status", "run_after"),
        Index("ix_jobs_app_name_created_at", "app_name", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    app_name: Mapped[str | None] = mapped_column(String(63))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    lock: Mapped[str | None] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), doc="of the request that set the key")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    owner: Mapped[str | None] = mapped_column(String(128), doc="node that claimed it")
    term: Mapped[int | None] = mapped_column(BigInteger, doc="leader term of the claim (fencing)")
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    steps: Mapped[list[Any]] = mapped_column(default=list, doc="progress, one entry per step")
    history: Mapped[list[Any] | None] = mapped_column(doc="ended attempts: node, term, outcome, reason, when")
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


@dataclass(frozen=True)
class Enqueued:
    job: Job
    created: bool  # False: an existing job answers this request (same idempotency key, or joined)


def enqueue(
    session: Session,
    kind: str,
    *,
    app_name: str | None = None,
    args: dict[str, Any] | None = None,
    lock: str | None = None,
    idempotency_key: str | None = None,
    request_fingerprint: str | None = None,
    actor: str = "system",
    max_attempts: int = 5,
) -> Enqueued:
    """Add a job in the caller's transaction (so it commits with the desired state it serves)."""
    if idempotency_key:
        existing = session.scalars(select(Job).where(Job.idempotency_key == idempotency_key)).one_or_none()
        if existing is not None:
            return Enqueued(existing, False)
    if lock is not None:
        waiting = session.scalars(
            select(Job).where(Job.lock == lock, Job.status == "queued").with_for_update()
        ).one_or_none()
        if waiting is not None and waiting.kind == kind:
            waiting.args = {**waiting.args, **(args or {})}
            return Enqueued(waiting, False)
        if waiting is not None:
            waiting.status = "cancelled"
            waiting.error = f"superseded by a {kind} request"
            waiting.finished_at = utcnow()
            session.flush()
    job = Job(
        kind=kind,
        app_name=app_name,
        args=args or {},
        lock=lock,
        idempotency_key=idempotency_key,
        request_fingerprint=request_fingerprint,
        created_by=actor,
        max_attempts=max_attempts,
    )
    session.add(job)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": str(job.id)})
    return Enqueued(job, True)


def by_idempotency_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


@dataclass(frozen=True)
class Claimed:
    """What a claim returns: enough to run the job without reading its row again."""

    id: int
    kind: str
    app_name: str | None
    args: dict[str, Any]
    attempts: int
    max_attempts: int
    created_at: datetime


_RUNNING = aliased(Job)


def queue_state(session: Session, now: datetime | None = None) -> tuple[bool, datetime | None]:
    """(is a queued job due, the earliest `run_after` of the queued jobs): the idle dispatcher's one read, which
    also tells it how long it may sleep (a retry or a wait comes due at its `run_after`, not at a poll)."""
    at: Any = now or (func.now() if session.get_bind().dialect.name == "postgresql" else utcnow())
    due = select(Job.id).where(Job.status == "queued", Job.run_after <= at).limit(1).scalar_subquery()
    earliest = select(func.min(Job.run_after)).where(Job.status == "queued").scalar_subquery()
    row = session.execute(select(due, earliest)).one()
    first = row[1]
    if isinstance(first, str):  # SQLite's MIN() comes back as text, not through the column's type
        first = datetime.fromisoformat(first)
    if first is not None and first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return row[0] is not None, first


def claim_next(session: Session, *, node: str, term: int, now: datetime | None = None) -> Claimed | None:
    """Claim the oldest runnable job whose lock is free, if this node leads at `term`: one statement
    (`UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING ...`). `now` defaults to the
    database's clock on PostgreSQL and this process's on SQLite."""
    if now is None:
        at: Any = func.now() if session.get_bind().dialect.name == "postgresql" else utcnow()
    else:
        at = now
    candidate = (
        select(Job.id)
        .where(Job.status == "queued", Job.run_after <= at)
        .where(or_(Job.lock.is_(None), ~exists().where(_RUNNING.lock == Job.lock, _RUNNING.status == "running")))
        .order_by(Job.run_after, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=Job)
        .scalar_subquery()
    )
    row = session.execute(
        update(Job)
        .where(Job.id == candidate, Job.status == "queued", holds_lease(node, term, at))
        .values(
            status="running",
            owner=node,
            term=term,
            attempts=Job.attempts + 1,
            started_at=at,
            heartbeat_at=at,
            error=None,
        )
        .returning(Job.id, Job.kind, Job.app_name, Job.args, Job.attempts, Job.max_attempts, Job.created_at)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    return Claimed(*row) if row is not None else None


def _mine(job_id: int, node: str, term: int) -> Any:
    return and_(Job.id == job_id, Job.status == "running", Job.owner == node, Job.term == term)


def finish(
    session: Session,
    job_id: int,
    *,
    node: str,
    term: int,
    status: str,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome; False if the job is no longer ours (requeued by a newer leader)."""
    res = session.execute(
        update(Job)
        .where(_mine(job_id, node, term))
        .values(status=status, finished_at=now, heartbeat_at=now, result=result, error=error)
        .execution_options(synchronize_session=False)
    )
    return affected(res) == 1


def requeue(
    session: Session,
    job_id: int,
    *,
    node: str,
    term: int,
    run_after: datetime,
    error: str | None = None,
    count_attempt: bool = True,
) -> bool:
    """Put a job back in the queue to run later (a retry, or a handler waiting for something).

    If another job of the same app was queued meanwhile, this one ends instead ("superseded"): handlers
    converge to the desired state the newer request already wrote, and one app never has two waiting jobs.
    """
    values: dict[str, Any] = {"status": "queued", "run_after": run_after, "owner": None, "error": error}
    mine = session.execute(
        select(Job.lock, Job.attempts, Job.owner, Job.term, Job.history).where(_mine(job_id, node, term))
    ).one_or_none()
    lock = mine.lock if mine is not None else None
    if mine is not None and count_attempt:
        values["history"] = _ended(mine, "retry", error, utcnow())
    if lock is not None:
        newer = session.scalar(select(Job.id).where(Job.lock == lock, Job.status == "queued", Job.id != job_id))
        if newer is not None:
            values = {
                "status": "cancelled",
                "finished_at": utcnow(),
                "heartbeat_at": utcnow(),
                "error": f"superseded by job {newer}, which carries on",
            }
    if not count_attempt:
        values["attempts"] = Job.attempts - 1
    res = session.execute(
        update(Job).where(_mine(job_id, node, term)).values(**values).execution_options(synchronize_session=False)
    )
    return affected(res) == 1


def add_step(session: Session, job_id: int, *, node: str, term: int, step: dict[str, Any], now: datetime) -> bool:
    job = session.scalars(select(Job).where(_mine(job_id, node, term))).one_or_none()
    if job is None:
        return False
    job.steps = [*job.steps, step]
    job.heartbeat_at = now
    return True


ABANDONED = "abandoned: lost leadership"


def _ended(job: Any, outcome: str, reason: str | None, now: datetime) -> Any:
    """`history` with one more ended attempt, for the UPDATE that ends it (`job`: a row of the job)."""
    entry = {"attempt": job.attempts, "node": job.owner, "term": job.term, "outcome": outcome, "reason": reason}
    return [*(job.history or []), {**entry, "at": now.isoformat()}]


def abandon(session: Session, job_id: int, *, node: str, term: int, now: datetime | None = None) -> str | None:
    """Hand a job whose fence ended back to the queue, recording why in the same UPDATE.

    Safe without the lease: it only changes a job still claimed by (`node`, `term`), and only makes it
    runnable again, which is what any later leader would do (claims are fenced). The next holder of the
    lease, this node in the same or a new term included, runs it again. A job whose app got a waiting job
    meanwhile ends as superseded (one waiting job per app). Returns the status it was left in."""
    now = now or utcnow()
    job = session.execute(
        select(Job.lock, Job.attempts, Job.owner, Job.term, Job.history)
        .where(_mine(job_id, node, term))
        .with_for_update()
    ).one_or_none()
    if job is None:
        return None
    newer = None
    if job.lock is not None:
        newer = session.scalar(select(Job.id).where(Job.lock == job.lock, Job.status == "queued", Job.id != job_id))
    values: dict[str, Any] = {"owner": None, "history": _ended(job, "abandoned", ABANDONED, now)}
    if newer is None:
        values.update(status="queued", run_after=now, error=ABANDONED)
    else:
        values.update(status="cancelled", finished_at=now, error=f"{ABANDONED}; superseded by job {newer}")
    res = session.execute(
        update(Job).where(_mine(job_id, node, term)).values(**values).execution_options(synchronize_session=False)
    )
    return str(values["status"]) if affected(res) == 1 else None


def requeue_abandoned(
    session: Session, *, node: str, term: int, running_here: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """When a node starts leading, and periodically while it leads: jobs still `running` under an older
    term, or claimed by this node but no longer running here (`running_here`: the dispatcher's threads;
    their fence ended, in this term or an earlier one), have nobody working on them; run them again.
    A job still running here hands itself back when its thread notices its fence ended.

    One whose app got a waiting job meanwhile ends as superseded instead, as in `requeue`: the waiting job
    converges to the newer desired state, and one app never has two waiting jobs (the unique index would
    refuse it, and with it the whole election)."""
    running = select(Job.id, Job.lock, Job.attempts, Job.owner, Job.term, Job.history).where(Job.status == "running")
    stale = or_(Job.term.is_(None), Job.term < term, Job.owner == node)
    if running_here:
        stale = and_(stale, or_(Job.owner.is_(None), Job.owner != node, Job.id.not_in(running_here)))
    found = session.execute(running.where(stale)).all()
    now = utcnow()
    locks = [row.lock for row in found if row.lock is not None]
    waiting: dict[str | None, int] = {}
    if locks:
        rows = session.execute(select(Job.lock, Job.id).where(Job.lock.in_(locks), Job.status == "queued"))
        waiting = {lock: job_id for lock, job_id in rows}
    requeued = []
    for row in found:
        # One UPDATE per job: each records its own attempt, and the status change carries its reason.
        values: dict[str, Any] = {"owner": None, "history": _ended(row, "abandoned", ABANDONED, now)}
        if row.lock in waiting:
            error = f"its leader went away; superseded by job {waiting[row.lock]}, which carries on"
            values.update(status="cancelled", finished_at=now, error=error)
        else:
            values.update(status="queued", error="its leader went away; requeued")
        res = session.execute(
            update(Job)
            .where(Job.id == row.id, Job.status == "running", Job.attempts == row.attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if affected(res) == 1 and row.lock not in waiting:
            requeued.append(row.id)
    return requeued


def job_steps(session: Session, job_id: int) -> list[dict[str, Any]]:
    """The steps a job recorded so far (across its runs)."""
    return list(session.scalars(select(Job.steps).where(Job.id == job_id)).one_or_none() or [])


def live_job(session: Session, lock: str) -> Job | None:
    return session.scalars(select(Job).where(Job.lock == lock, Job.status.in_(LIVE_STATUSES)).order_by(Job.id)).first()


def query_jobs(
    session: Session,
    *,
    app_name: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[Job]:
    stmt = select(Job)
    if app_name:
        stmt = stmt.where(Job.app_name == app_name)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    return list(session.scalars(stmt.order_by(Job.id.desc()).limit(limit)))


def live_locks(session: Session) -> set[str]:
    """The locks (apps) that have a queued or running job."""
    locks = session.scalars(select(Job.lock).where(Job.status.in_(LIVE_STATUSES), Job.lock.is_not(None)))
    return {lock for lock in locks if lock is not None}
