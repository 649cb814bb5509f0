"""CLI commands that talk to the controller's API: register, list, status, spec, revisions, delete, events."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestry.cli.client import Client, CliError
from orchestry.cli.output import ago, keyvalues, print_json, table
from orchestry.config import Settings

Args = argparse.Namespace


def _client(settings: Settings) -> Client:
    return Client(urls=settings.urls, token=settings.token)


def _read(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "application/yaml"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read ({exc.strerror})") from None
    ctype = "application/json" if path.lower().endswith(".json") else "application/yaml"
    return data, ctype


def register(args: Args, settings: Settings) -> int:
    client = _client(settings)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in args.files:
        try:
            body, ctype = _read(path)
            resp = client.request(
                "POST",
                "/api/v1/apps",
                content=body,
                headers={"Content-Type": ctype},
                params={k: "true" for k, on in (("strict", args.strict), ("dry_run", args.dry_run)) if on} or None,
            )
        except CliError as exc:
            if "cannot reach" in str(exc):
                raise
            failed += 1
            print(f"orchestry: {path}: {exc}", file=sys.stderr)
            for line in exc.lines:
                print(f"  {line}", file=sys.stderr)
            continue
        for result in resp.json()["results"]:
            results.append({"file": path, **result})
    if args.json:
        print_json({"results": results, "failed": failed})
    else:
        for r in results:
            print(r["message"])
            for w in r["warnings"]:
                print(f"  warning: {w['message']}")
            if r.get("dry_run"):
                print_changes(r.get("changes") or [], r.get("replace") or [])
    return 1 if failed else 0


def _shown(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def print_changes(changes: list[dict[str, Any]], replace: list[str]) -> None:
    """`kubectl diff` style: `~ path: before -> after`, `+ path: value`, `- path: value`; then the replicas."""
    for c in changes:
        if c["kind"] == "added":
            print(f"  + {c['path']}: {_shown(c['after'])}")
        elif c["kind"] == "removed":
            print(f"  - {c['path']}: {_shown(c['before'])}")
        else:
            print(f"  ~ {c['path']}: {_shown(c['before'])} -> {_shown(c['after'])}")
    if replace:
        print(f"  replicas to replace, one at a time: {', '.join(replace)}")


def diff(args: Args, settings: Settings) -> int:
    params = {k: str(v) for k, v in (("from", args.from_), ("to", args.to)) if v is not None}
    data = _client(settings).get(f"/api/v1/apps/{args.name}/diff", params=params or None)
    if args.json:
        print_json(data)
        return 0
    head = f"{data['app']}: revision {data['from_revision']} -> {data['to_revision']}"
    if data["same_spec"]:
        print(f"{head}: the same spec")
    else:
        print(f"{head}: {len(data['changes'])} field(s) differ")
    print_changes(data["changes"], data["replace"])
    return 0


def list_apps(args: Args, settings: Settings) -> int:
    data = _client(settings).get("/api/v1/apps")
    if args.json:
        print_json(data)
        return 0
    rows = [
        (
            a["name"],
            a["status"],
            a["type"],
            a["revision"],
            f"{a['replica_count']}/{a['desired_replicas']}",
            a["mode"],
            a["image"],
            ago(a["updated_at"]),
        )
        for a in data["apps"]
    ]
    print(
        table(rows, ("NAME", "STATUS", "TYPE", "REV", "REPLICAS", "MODE", "IMAGE", "UPDATED"))
        if rows
        else "no apps registered"
    )
    return 0


def status(args: Args, settings: Settings) -> int:
    if args.name is None:
        return system_status(args, settings)
    a = _client(settings).get(f"/api/v1/apps/{args.name}")
    if args.json:
        print_json(a)
        return 0
    print(
        keyvalues(
            [
                ("name", a["name"]),
                ("status", a["status"] + (f" ({a['status_reason']})" if a["status_reason"] else "")),
                ("type", a["type"]),
                ("image", a["image"]),
                ("revision", f"{a['revision']} {a['content_hash']}"),
                ("replicas", f"{a['replica_count']} running, {a['desired_replicas']} desired"),
                ("scaling", f"{a['mode']} {a['min_replicas']}..{a['max_replicas']}"),
                *([("last scaling", a["last_scaling"])] if a.get("last_scaling") else []),
                ("created", ago(a["created_at"])),
                ("updated", ago(a["updated_at"])),
            ]
        )
    )
    if a["replicas"]:
        rows = [
            (
                r["name"],
                r["revision"],
                r["state"],
                r["health"],
                r["address"],
                (r["container_id"] or "")[:12],
                ago(r["started_at"]),
                r["last_error"],
            )
            for r in a["replicas"]
        ]
        print()
        print(table(rows, ("REPLICA", "REV", "STATE", "HEALTH", "ADDRESS", "CONTAINER", "STARTED", "LAST ERROR")))
    return 0


def system_status(args: Args, settings: Settings) -> int:
    """`orchestry status` without an app: the node answering, its database (reads, writes) and components.
    Exit 1 unless everything is up."""
    resp = _client(settings).request("GET", "/health", ok=(503,))
    h = resp.json()
    if args.json:
        print_json(h)
    else:
        print(keyvalues([("node", h["node"]), ("version", h["version"]), ("status", h["status"])]))
        rows = [
            (name, c["state"], "" if c["for_seconds"] is None else f"{c['for_seconds']:g}s", c["error"] or "")
            for name, c in h["components"].items()
        ]
        print()
        print(table(rows, ("COMPONENT", "STATE", "FOR", "ERROR")))
        print(f"database: reads {h['database_read']}, writes {h['database_write']}")
    return 0 if h["status"] == "ok" else 1


def spec(args: Args, settings: Settings) -> int:
    params: dict[str, Any] = {"raw": "true"} if args.raw else {}
    if args.revision is not None:
        params["revision"] = args.revision
    resp = _client(settings).request("GET", f"/api/v1/apps/{args.name}/spec", params=params)
    if args.raw:
        sys.stdout.write(resp.text)
        return 0
    data = resp.json()
    if args.json:
        print_json(data)
    else:
        from ruamel.yaml import YAML

        print(f"# {data['app']} revision {data['revision']} {data['content_hash']}")
        YAML(typ="safe", pure=True).dump(data["spec"], sys.stdout)
    return 0


def revisions(args: Args, settings: Settings) -> int:
    data = _client(settings).get(f"/api/v1/apps/{args.name}/revisions")
    if args.json:
        print_json(data)
        return 0
    rows = [
        (
            ("*" if r["current"] else " ") + str(r["number"]),
            r["content_hash"][:19],
            r["created_by"],
            ago(r["created_at"]),
            len(r["warnings"]),
            f"rollback to {r['restored_from']}" if r.get("restored_from") else "",
        )
        for r in data["revisions"]
    ]
    print(table(rows, ("REV", "HASH", "BY", "CREATED", "WARNINGS", "NOTE")))
    return 0


def events(args: Args, settings: Settings) -> int:
    params = {k: v for k, v in (("type", args.type), ("since", args.since), ("limit", args.limit)) if v}
    path = f"/api/v1/apps/{args.name}/events" if args.name else "/api/v1/events"
    data = _client(settings).get(path, params=params)
    if args.json:
        print_json(data)
        return 0
    rows = [
        (e["created_at"][:19].replace("T", " "), e["type"], e["app"], e["actor"], e["message"]) for e in data["events"]
    ]
    print(table(rows, ("TIME (UTC)", "TYPE", "APP", "ACTOR", "MESSAGE")) if rows else "no events")
    return 0
