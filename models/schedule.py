"""The statements of APScheduler's job table (`apscheduler_jobs`, which its SQLAlchemy job store creates),
each conditioned on the leader lease: a write the term no longer covers changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Executable, Table, exists, literal, select
from sqlalchemy.orm import Session

from orchestry.models.base import affected
from orchestry.models.cluster import db_now, holds_lease

Build = Callable[[Any], Executable]  # the lease's condition -> the statement


def fenced_write(session: Session, node: str, term: int, build: Build) -> int | None:
    """Rows the statement changed under (`node`, `term`); None when the term no longer covers it."""
    covered = holds_lease(node, term, db_now(session))
    changed = affected(session.execute(build(covered)))
    if changed or session.execute(select(covered)).scalar():  # nothing to change, and still leading
        return changed
    return None


def insert_absent(t: Table, values: dict[str, Any]) -> Build:
    """Insert the row unless one with its id exists."""

    def insert(covered: Any) -> Executable:
        row = select(*(literal(v, type_=t.c[k].type).label(k) for k, v in values.items())).where(covered)
        new = row.where(~exists().where(t.c.id == values["id"]))
        insert: Executable = t.insert().from_select(list(values), new)
        return insert

    return insert


def update_row(t: Table, job_id: str, values: dict[str, Any]) -> Build:
    return lambda covered: t.update().values(**values).where(t.c.id == job_id, covered)


def delete_row(t: Table, job_id: str) -> Build:
    return lambda covered: t.delete().where(t.c.id == job_id, covered)
