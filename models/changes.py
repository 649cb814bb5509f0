"""A count of the committed writes to the replicas and apps tables made by this process's sessions.

The leader's health sweep plans its probes twice a second; reading every replica's row each time costs as
much as the probes at a few hundred replicas (issue 10). It keeps the rows it read and reads again only once
this count moved (or its rows are a few seconds old: a write this count cannot see, such as another process's
or a raw connection's, is then read too). Only the leader writes replicas, in this process, so the count
sees every write that matters as it commits.

A writer that keeps its own copy up to date (the sweep's health records) marks its statement with
`QUIET` so that its own writes do not make it read again.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

WATCHED = frozenset({"replicas", "apps"})
QUIET = "orchestry_quiet_write"  # execution option of a write whose writer keeps its own copy up to date
_WROTE = "orchestry_wrote_watched"  # session.info flag: this transaction wrote a watched table


class ChangeCount:
    """A number that grows at every commit that wrote a watched table; compare two readings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    @property
    def value(self) -> int:
        return self._value

    def bump(self) -> None:
        with self._lock:
            self._value += 1


watched_writes = ChangeCount()


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    """A bulk INSERT, UPDATE or DELETE through a session (`session.execute(update(Replica)...)`)."""
    if state.is_select or state.execution_options.get(QUIET):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.local_table.name in WATCHED:  # type: ignore[attr-defined]
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _on_flush(session: Session, _context: Any) -> None:
    """ORM objects added, changed or deleted (the collections still hold the flush's objects here)."""
    for obj in (*session.new, *session.dirty, *session.deleted):
        if getattr(obj, "__tablename__", None) in WATCHED:
            session.info[_WROTE] = True
            return


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        watched_writes.bump()


@event.listens_for(Session, "after_rollback")
def _on_rollback(session: Session) -> None:
    session.info.pop(_WROTE, None)
