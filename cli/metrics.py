"""`orchestry metrics [NAME]`: an app's current figures, window means and replicas, or every app's figures.

`--json` prints the API's answer.
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestry.cli.apps import _client
from orchestry.cli.output import ago, print_json, table
from orchestry.config import Settings

FIGURES = (
    ("CPU %", "cpu_percent", "{:.1f}"),
    ("MEM %", "memory_percent", "{:.1f}"),
    ("RPS", "rps", "{:.1f}"),
    ("P95 MS", "p95_ms", "{:.0f}"),
    ("CONNS", "active_connections", "{:.0f}"),
    ("ERRORS", "error_rate", "{:.1%}"),
    ("READY", "ready_replicas", "{:g}"),
)


def _fmt(value: Any, pattern: str) -> str | None:
    return None if value is None else pattern.format(value)


def metrics(args: argparse.Namespace, settings: Settings) -> int:
    if args.name is None:
        return summary(args, settings)
    params = {"since": args.since} if args.since else {}
    m = _client(settings).get(f"/api/v1/apps/{args.name}/metrics", params=params)
    if args.json:
        print_json(m)
        return 0
    if m["current"] is None:
        print(f"{m['app']}: no current sample (the leader samples every {m['interval_seconds']:g}s while it runs)")
    else:
        print(f"{m['app']}: sampled {ago(m['collected_at'])}, every {m['interval_seconds']:g}s")
    rows = []
    if m["current"] is not None:
        rows.append(("now", *(_fmt(m["current"][key], p) for _, key, p in FIGURES)))
    for label, w in m["windows"].items():
        rows.append((f"{label} mean", *(_fmt(w[key], p) for _, key, p in FIGURES)))
    if rows:
        print()
        print(table(rows, ("", *(h for h, _, _ in FIGURES))))
    if m["replicas"]:
        print()
        print(
            table(
                [
                    (
                        r["name"],
                        _fmt(r["cpu_percent"], "{:.1f}"),
                        _fmt(r["cpu_percent_1m"], "{:.1f}"),
                        _fmt(r["memory_percent"], "{:.1f}"),
                        _fmt(r["rps"], "{:.1f}"),
                    )
                    for r in m["replicas"]
                ],
                ("REPLICA", "CPU %", "CPU % 1m", "MEM %", "RPS"),
            )
        )
    return 0


def summary(args: argparse.Namespace, settings: Settings) -> int:
    """Every app on one line each (`GET /api/v1/metrics`)."""
    m = _client(settings).get("/api/v1/metrics")
    if args.json:
        print_json(m)
        return 0
    rows = [
        (
            a["app"],
            a["status"],
            f"{a['ready_replicas']}/{a['desired_replicas']}",
            *(_fmt(a[key], p) for _, key, p in FIGURES[:-1]),
            ago(a["collected_at"]) if a["collected_at"] else None,
        )
        for a in m["apps"]
    ]
    print(table(rows, ("APP", "STATUS", "READY", *(h for h, _, _ in FIGURES[:-1]), "SAMPLED")))
    return 0
