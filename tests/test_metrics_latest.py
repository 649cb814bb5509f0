"""Every app's latest collection (the API's summary, Prometheus' exposition, the dashboard's apps table) reads
the few recent rows, never the whole history: its cost stays flat while samples accumulate for a day."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from seed import SAMPLE_STEP, running_app
from sqlalchemy import event, insert
from sqlalchemy.orm import Session, sessionmaker

from orchestry.models.base import utcnow
from orchestry.models.metrics import MetricSample, latest_app_rows, latest_rows

SPEC = "apiVersion: v1\nkind: App\nmetadata: {{name: {name}}}\nspec:\n  image: busybox\n"
SPEC += "  ports: [{{containerPort: 8080}}]\n"


def test_latest_rows_are_each_apps_newest_collection(sessions: sessionmaker[Session]) -> None:
    now = utcnow()
    with sessions.begin() as s:
        ids = [running_app(s, name, SPEC.format(name=name), 2, 30000 + 10 * i).id for i, name in enumerate("abc")]
        s.flush()
        rows: list[dict[str, Any]] = []
        for k in range(600):  # 20 minutes of history; app c stopped being collected 10 minutes ago
            at = now - k * SAMPLE_STEP
            for app_id in ids[:2] if k < 300 else ids:
                rows.append({"app_id": app_id, "replica_name": None, "taken_at": at, "rps": float(k)})
                rows += [{"app_id": app_id, "replica_name": f"r{r}", "taken_at": at, "rps": 1.0} for r in (1, 2)]
        s.execute(insert(MetricSample), rows)
    since = now - timedelta(seconds=10)
    with sessions() as s:
        latest = latest_app_rows(s, since)
        assert sorted(latest) == ids[:2] and {r.rps for r in latest.values()} == {0.0}
        full = latest_rows(s, since)
        assert [(r.app_id, r.replica_name) for r in full] == [
            (ids[0], None),
            (ids[0], "r1"),
            (ids[0], "r2"),
            (ids[1], None),
            (ids[1], "r1"),
            (ids[1], "r2"),
        ]
        assert {r.rps for r in full if r.replica_name is None} == {0.0}


def test_the_latest_rows_query_reads_a_range_of_recent_rows_on_sqlite(sessions: sessionmaker[Session]) -> None:
    """SQLite's planner would walk the whole (app_id, taken_at) index for its GROUP BY order (133 ms per call
    at 40 apps x 10 minutes of samples, growing with the retained day); the query must search the taken_at
    range instead. PostgreSQL plans it by its statistics (a range too)."""
    with sessions() as s:
        if s.get_bind().dialect.name != "sqlite":
            return
        seen: list[tuple[str, Any]] = []

        def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if "metric_samples" in statement:
                seen.append((statement, parameters))

        bind = s.get_bind()
        event.listen(bind, "before_cursor_execute", grab)
        try:
            latest_app_rows(s, utcnow() - timedelta(seconds=10))
        finally:
            event.remove(bind, "before_cursor_execute", grab)
        ((statement, parameters),) = seen
        plan = " | ".join(
            str(row[3]) for row in s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, tuple(parameters))
        )
        assert "ix_metric_samples_taken_at (taken_at>?)" in plan, plan
        assert "SCAN metric_samples" not in plan, plan
