"""Cost that grows with change, not with size (issue 10): the leader's periodic sweeps over N running apps in
which nothing happens issue a bounded number of statements, whatever N, and write nothing that did not change.
Real database (SQLite or PostgreSQL); statements counted with a SQLAlchemy event listener."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from seed import running_app, samples
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from orchestry.controller.autoscaler import Autoscaler
from orchestry.controller.health import HealthSweep
from orchestry.jobs.base import Fence
from orchestry.models.apps import App, AppRevision, RevisionMemo, get_app
from orchestry.models.base import utcnow
from orchestry.models.replicas import Replica
from orchestry.operations.registration import Submission, register
from orchestry.spec import load_specs
from orchestry.workflows.health import ProbeResult

from conftest import DB_KIND

APPS = 30
REPLICAS = 3
SPEC = """\
apiVersion: v1
kind: App
metadata: {name: %s}
spec:
  image: orchestry-testapp:latest
  ports: [{containerPort: 8080}]
healthCheck: {path: /health}
scaling: {mode: %s, maxReplicas: 5}
"""
WRITE = re.compile(r"^\s*(UPDATE|INSERT|DELETE)\b", re.IGNORECASE)


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement the engine runs meanwhile (transaction control and settings left out)."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "PRAGMA", "SET ", "COMMIT", "ROLLBACK", "SELECT 1")):
            seen.append(statement)

    event.listen(engine, "after_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", count)


def running_apps(sessions: sessionmaker[Session], count: int, mode: str = "manual") -> list[int]:
    """`count` running apps of REPLICAS healthy replicas each, with 10 s of samples (app and replica rows)."""
    ids = []
    now = utcnow()
    with sessions.begin() as s:
        for i in range(count):
            name = f"a{i:03d}"
            app = running_app(s, name, SPEC % (name, mode), REPLICAS, port_base=30000 + i * 10)
            ids.append(app.id)
            for slot in range(1, REPLICAS + 1):
                s.add_all(samples(app.id, now, 5, replica=f"{name}-{slot}"))
            s.add_all(samples(app.id, now, 5, rps=1.0, ready_replicas=REPLICAS))
    return ids


def fence() -> Fence:
    return Fence("n", 1, lambda: time.monotonic() + 60)


def test_autoscaling_n_quiet_manual_apps_costs_a_few_statements_and_writes_nothing(
    sessions: sessionmaker[Session],
) -> None:
    running_apps(sessions, APPS)
    scaler = Autoscaler(sessions, fence, max_replicas=50, retention_seconds=86400)
    engine: Engine = sessions.kw["bind"]
    scaler.run()  # the first round reads every revision's scaling section (then kept: revisions never change)
    with statements(engine) as fast:
        assert scaler.run(fast=True) == []
    with statements(engine) as full:
        assert scaler.run() == []
    # The survey: the database's clock and the running apps; a manual app's decision needs its bounds only, so
    # no replica, metric window or history is read; old decisions are purged once a minute (the first round
    # did). It once took a transaction and ~8 queries per app, then 8 statements a round whatever the mode.
    assert len(fast) <= 3, fast
    assert len(full) <= 3, full
    assert [s for s in full if WRITE.match(s)] == [], full
    reads = [s for s in fast + full if s.lstrip().upper().startswith("SELECT")]
    assert not [s for s in reads if "metric_samples" in s or "scaling_decisions" in s or "FROM replicas" in s]
    assert [s for s in fast if WRITE.match(s)] == []


class FakeProber:
    """Answers every check at once: ok, except the replicas named in `failing`."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.checked = 0
        self.paths: list[str] = []

    def check_all(self, targets: Any, now_fn: Any = None) -> dict[str, ProbeResult]:
        self.checked += len(targets)
        self.paths = [t.path for t in targets]
        return {
            t.key: ProbeResult(
                t.key not in self.failing, utcnow(), 1.5, "HTTP 500" if t.key in self.failing else "HTTP 200"
            )
            for t in targets
        }


def test_a_health_check_that_changes_nothing_writes_nothing(sessions: sessionmaker[Session]) -> None:
    running_apps(sessions, APPS)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    engine: Engine = sessions.kw["bind"]
    first = sweep.run()  # every replica due (never checked): recorded, in one statement
    assert first.checked == APPS * REPLICAS and first.transitions == []
    with statements(engine) as seen:
        again = sweep.run(force=True)  # every replica probed again: healthy, as before
    assert again.checked == APPS * REPLICAS and prober.checked == 2 * APPS * REPLICAS
    assert [s for s in seen if WRITE.match(s)] == [], seen
    assert len(seen) <= 2, seen  # the replicas and their apps (the checks of their revisions are kept)
    # The checks were still counted: none is due again before its period (10 s) is over.
    assert sweep.run().checked == 0 and prober.checked == 2 * APPS * REPLICAS

    # A change writes the replicas it changed, in one statement.
    prober.failing = {"a001-2"}
    with statements(engine) as seen:
        failed = sweep.run(force=True)
    assert failed.results["a001-2"]["ok"] is False and failed.results["a001-1"]["ok"] is True
    writes = [s for s in seen if WRITE.match(s)]
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith("UPDATE REPLICAS"), writes
    with sessions() as s:
        row = s.scalars(select(Replica).where(Replica.name == "a001-2")).one()
        assert (row.health, row.consecutive_failures, row.last_error) == ("healthy", 1, "HTTP 500")


def test_a_new_app_on_a_deleted_apps_revision_id_is_checked_as_its_own_spec(sessions: sessionmaker[Session]) -> None:
    """The sweep keeps each revision's check; SQLite gives a deleted app's ids to the next one registered."""
    (first,) = running_apps(sessions, 1)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    assert sweep.run().checked == REPLICAS
    with sessions.begin() as s:
        app = s.get(App, first)
        assert app is not None
        old_revision = s.scalars(select(AppRevision.id)).one()
        s.delete(app)
    # The same name, another health check: probed as its own spec says.
    loaded = load_specs(SPEC.replace("path: /health", "path: /other") % ("a000", "manual"), "application/yaml")
    with sessions.begin() as s:
        spec = loaded.specs[0]
        register(s, Submission("a000", spec.normalized, spec.content_hash, ()), raw="", raw_format="yaml", actor="t")
        app = get_app(s, "a000")
        assert app is not None
        app.status = "running"
        s.flush()
        s.add(
            Replica(
                app_id=app.id, name="a000-1", slot=1, revision=1, container_id="x", state="running", ports={"8080": 1}
            )
        )
    assert sweep.run().checked == 1 and prober.paths == ["/other"]
    if DB_KIND == "sqlite":  # the premise: the new revision got the deleted one's id
        with sessions() as s:
            assert s.scalars(select(AppRevision.id)).one() == old_revision


def test_the_revision_memo_starting_over_reads_every_revision_asked_for(sessions: sessionmaker[Session]) -> None:
    """Beyond its limit the memo starts over: the revisions it held before are read again, not lost (the sweep
    then found no check for them, the survey a default policy)."""
    running_apps(sessions, 3)
    memo = RevisionMemo(lambda spec: spec["scaling"]["maxReplicas"], limit=2)
    with sessions() as s:
        keys = [
            (rev_id, content_hash)
            for rev_id, content_hash in s.execute(select(AppRevision.id, AppRevision.content_hash))
        ]
        assert memo.load(s, keys[:2]) == {key: 5 for key in keys[:2]}
        assert memo.load(s, keys) == {key: 5 for key in keys}  # over the limit: all three, read again
        assert memo.load(s, [(None, None), *keys[:1]]) == {keys[0]: 5}  # an app without a revision: left out


# -- the health sweep's tick: rows read again only after a change ----------------------------------------------


def later(monkeypatch: Any, seconds: float) -> None:
    """The sweep's clock `seconds` ahead (every check is due again after its period, 10 s)."""
    ahead = utcnow() + timedelta(seconds=seconds)
    monkeypatch.setattr("orchestry.controller.health.utcnow", lambda: ahead)


def test_a_tick_that_finds_nothing_changed_reads_nothing(sessions: sessionmaker[Session]) -> None:
    """The leader's tick runs twice a second: it plans from the rows it read last while no replica or app was
    written since (it read every replica's row and its app's, twice a second, at 200 replicas ~13 % of the
    controller's idle CPU)."""
    running_apps(sessions, APPS)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    engine: Engine = sessions.kw["bind"]
    assert sweep.run().checked == APPS * REPLICAS
    with statements(engine) as seen:
        assert sweep.run().checked == 0
        assert sweep.run().checked == 0
    assert seen == []


def test_a_replica_written_meanwhile_is_planned_at_the_next_tick(sessions: sessionmaker[Session]) -> None:
    (app_id,) = running_apps(sessions, 1)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    assert sweep.run().checked == REPLICAS
    with sessions.begin() as s:  # a job starts one more replica (an ORM object)
        s.add(
            Replica(
                app_id=app_id,
                name="a000-9",
                slot=9,
                revision=1,
                container_id="c9",
                state="running",
                ports={"8080": 39999},
                started_at=utcnow() - timedelta(minutes=1),
            )
        )
    report = sweep.run()
    assert list(report.results) == ["a000-9"]


def test_an_app_stopped_meanwhile_is_no_longer_probed(sessions: sessionmaker[Session], monkeypatch: Any) -> None:
    first, _second = running_apps(sessions, 2)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    assert sweep.run().checked == 2 * REPLICAS
    with sessions.begin() as s:  # a bulk UPDATE (no ORM object): the stop job's way
        s.execute(update(App).where(App.id == first).values(status="stopped"))
    later(monkeypatch, 11)
    assert sorted(sweep.run().results) == ["a001-1", "a001-2", "a001-3"]


def test_its_own_writes_need_no_read_and_count_as_written(sessions: sessionmaker[Session], monkeypatch: Any) -> None:
    """A check that changed a replica's health is written and kept as written: the next tick plans from it
    without reading (a second failure counts 2, not 1 again from the row read before the write)."""
    running_apps(sessions, 1)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    engine: Engine = sessions.kw["bind"]
    prober.failing = {"a000-2"}
    assert sweep.run().results["a000-2"]["ok"] is False
    later(monkeypatch, 11)
    with statements(engine) as seen:
        again = sweep.run()
    assert again.checked == REPLICAS
    assert [s for s in seen if s.lstrip().upper().startswith("SELECT") and "FROM replicas JOIN" in s] == []
    with sessions() as s:
        row = s.scalars(select(Replica).where(Replica.name == "a000-2")).one()
        assert row.consecutive_failures == 2


def test_a_change_no_session_saw_is_read_within_the_snapshots_age(
    sessions: sessionmaker[Session], monkeypatch: Any
) -> None:
    """A write outside this process's sessions (another process, a raw connection) is still seen: the rows are
    read again once they are SNAPSHOT_SECONDS old."""
    running_apps(sessions, 1)
    prober = FakeProber()
    sweep = HealthSweep(sessions, prober, None, lambda apps: None)  # type: ignore[arg-type]
    assert sweep.run().checked == REPLICAS
    engine: Engine = sessions.kw["bind"]
    with engine.begin() as conn:
        conn.execute(update(Replica).where(Replica.name == "a000-1").values(drain_started_at=utcnow()))
    later(monkeypatch, 11)
    monkeypatch.setattr("orchestry.controller.health.SNAPSHOT_SECONDS", 0.0)
    assert sorted(sweep.run().results) == ["a000-2", "a000-3"]


def test_a_renewal_while_leading_is_one_statement(sessions: sessionmaker[Session]) -> None:
    """Twice a second for as long as a node leads: one conditioned UPDATE, not an upsert, a locking read and
    an update (the full election runs only when that UPDATE finds the lease no longer ours)."""
    from orchestry.models.cluster import Held, acquire_or_renew

    with sessions.begin() as s:
        held = acquire_or_renew(s, "n1", 30.0)
    assert isinstance(held, Held) and held.new_term
    engine = sessions.kw["bind"]
    with statements(engine) as seen, sessions.begin() as s:
        renewed = acquire_or_renew(s, "n1", 30.0, held.term)
    assert isinstance(renewed, Held) and (renewed.term, renewed.new_term) == (held.term, False)
    assert renewed.acquired_at == held.acquired_at and renewed.expires_at > held.expires_at
    assert [re.sub(r"\s+", " ", s).split(" ")[0] for s in seen if not s.startswith("SELECT clock_timestamp")] == [
        "UPDATE"
    ], seen


def test_a_renewal_that_finds_the_lease_taken_still_sees_who_holds_it(sessions: sessionmaker[Session]) -> None:
    from orchestry.models.cluster import Held, Lost, acquire_or_renew

    with sessions.begin() as s:
        first = acquire_or_renew(s, "n1", 0.01)
    assert isinstance(first, Held)
    time.sleep(0.05)
    with sessions.begin() as s:
        other = acquire_or_renew(s, "n2", 30.0)  # the lease lapsed: n2 takes it, a new term
    assert isinstance(other, Held) and other.term == first.term + 1
    with sessions.begin() as s:
        late = acquire_or_renew(s, "n1", 30.0, first.term)
    assert isinstance(late, Lost) and late.holder == "n2"


def test_a_cert_sweep_reads_the_specs_only_when_the_edge_moved(sessions: sessionmaker[Session]) -> None:
    """Every 2 s on the leader: the `tls: auto` hosts come from every app's spec in force, which change only
    with the edge's version (a registration, a rollback, a deletion bumps it). Reading and decoding every spec
    each time cost grew with the apps registered, not with change (issue 10)."""
    from orchestry.controller.acme import CertSweep
    from orchestry.models.edge import bump_edge

    running_apps(sessions, APPS)
    sweep = CertSweep(sessions)
    assert sweep.run() == []
    engine: Engine = sessions.kw["bind"]
    with statements(engine) as seen:
        assert sweep.run() == []
    assert [re.sub(r"\s+", " ", s).split(" FROM ")[-1].split(" ")[0] for s in seen] == ["edge_state"], seen
    with sessions.begin() as s:
        bump_edge(s)
    with statements(engine) as seen:
        assert sweep.run() == []
    assert any("app_revisions" in s for s in seen)  # read again: the edge moved


def test_a_rollback_moves_the_edge(sessions: sessionmaker[Session]) -> None:
    """The revision in force changed, and its routes may have: every node's nginx takes the edge again, and the
    cert sweep reads the specs again (it keys them on the edge's version)."""
    from orchestry.models.apps import get_revision
    from orchestry.models.edge import edge_version
    from orchestry.operations.registration import restore_revision

    (app_id,) = running_apps(sessions, 1)
    with sessions.begin() as s:
        before = edge_version(s)
        app = s.get(App, app_id)
        assert app is not None
        first = get_revision(s, app)
        assert first is not None
        restore_revision(s, app, first, actor="t", reason="test")
    with sessions() as s:
        assert edge_version(s) == before + 1
