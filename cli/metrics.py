"""`orchestry metrics NAME`: an app's current figures, window means and replicas (`--json`: the API's answer)."""

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
