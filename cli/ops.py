"""CLI commands that enqueue operations and follow jobs: up, down, scale, delete, jobs, job, logs."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from orchestry.cli.apps import _client
from orchestry.cli.client import Client, CliError
from orchestry.cli.output import ago, keyvalues, print_json, table
from orchestry.config import Settings

Args = argparse.Namespace
FINAL = ("succeeded", "failed", "cancelled")


def _step_line(step: dict[str, Any]) -> str:
    mark = {"ok": "ok ", "running": "..."}.get(str(step.get("status")), "ERR")
    extra = ", ".join(f"{k} {v}" for k, v in step.items() if k not in ("step", "status", "at") and v)
    return f"  [{mark}] {step['step']}" + (f" ({extra})" if extra else "")


def follow(client: Client, job: dict[str, Any], *, as_json: bool, timeout: float) -> int:
    """Print the job's steps as they happen until it ends; exit code 1 if it did not succeed."""
    shown = 0
    waiting = None
    deadline = time.monotonic() + timeout
    if not as_json:
        print(f"job {job['id']} ({job['kind']} {job['app'] or ''}) {job['status']}")
    while True:
        for step in job["steps"][shown:]:
            if not as_json:
                print(_step_line(step), flush=True)
        shown = len(job["steps"])
        if job["status"] == "queued" and job["error"] and job["error"] != waiting and not as_json:
            waiting = job["error"]
            print(f"  ... {waiting}", flush=True)
        if job["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            raise CliError(
                f"job {job['id']} still {job['status']} after {timeout:.0f}s; follow it with "
                f"`orchestry job {job['id']}`"
            )
        time.sleep(0.25)
        job = client.get(job["url"])
    rolled_back = (job.get("result") or {}).get("rolled_back")
    if as_json:
        print_json(job)
    elif job["status"] == "succeeded" and rolled_back:
        print(
            f"job {job['id']}: the rollout of revision {rolled_back['from']} halted ({rolled_back['reason']}); "
            f"rolled back to revision {rolled_back['restored']} as revision {rolled_back['revision']}{_took(job)}",
            file=sys.stderr,
        )
    elif job["status"] == "succeeded":
        print(f"job {job['id']} succeeded{_took(job)}")
    else:
        print(f"job {job['id']} {job['status']}{_took(job)}: {job['error']}", file=sys.stderr)
    return 0 if job["status"] == "succeeded" and not rolled_back else 1


def _took(job: dict[str, Any]) -> str:
    from datetime import datetime

    if job.get("started_at") and job.get("finished_at"):
        seconds = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
        return f" in {seconds.total_seconds():.1f}s"
    return ""


def _submit(
    args: Args,
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> int:
    client = _client(settings)
    resp = client.request(method, path, json=body, params=params)
    accepted = resp.json()
    if args.wait:
        return follow(client, accepted["job"], as_json=args.json, timeout=args.timeout)
    if args.json:
        print_json(accepted)
    else:
        print(
            f"{accepted['message']}: job {accepted['job']['id']} {accepted['job']['status']} "
            f"(follow with `orchestry job {accepted['job']['id']}` or use --wait)"
        )
    return 0


def up(args: Args, settings: Settings) -> int:
    body = {"replicas": args.replicas} if args.replicas is not None else None
    return _submit(args, settings, "POST", f"/api/v1/apps/{args.name}/up", body)


def down(args: Args, settings: Settings) -> int:
    return _submit(args, settings, "POST", f"/api/v1/apps/{args.name}/down")


def scale(args: Args, settings: Settings) -> int:
    return _submit(args, settings, "POST", f"/api/v1/apps/{args.name}/scale", {"replicas": args.replicas})


def delete(args: Args, settings: Settings) -> int:
    params = {key: "true" for key in ("force", "volumes") if getattr(args, key, False)}
    return _submit(args, settings, "DELETE", f"/api/v1/apps/{args.name}", params=params or None)


def rollback(args: Args, settings: Settings) -> int:
    body = {"to": args.to} if args.to is not None else None
    return _submit(args, settings, "POST", f"/api/v1/apps/{args.name}/rollback", body)


def restart(args: Args, settings: Settings) -> int:
    return _submit(args, settings, "POST", f"/api/v1/apps/{args.name}/restart")


def jobs(args: Args, settings: Settings) -> int:
    given = (("app", args.app), ("status", args.status), ("kind", args.kind), ("limit", args.limit))
    params = {k: v for k, v in given if v}
    data = _client(settings).get("/api/v1/jobs", params=params)
    if args.json:
        print_json(data)
        return 0
    rows = [
        (
            j["id"],
            j["kind"],
            j["app"],
            j["status"],
            j["attempts"],
            len(j["steps"]),
            ago(j["created_at"]),
            (j["error"] or "")[:60],
        )
        for j in data["jobs"]
    ]
    print(table(rows, ("ID", "KIND", "APP", "STATUS", "TRIES", "STEPS", "CREATED", "ERROR")) if rows else "no jobs")
    return 0


def job(args: Args, settings: Settings) -> int:
    client = _client(settings)
    data = client.get(f"/api/v1/jobs/{args.id}")
    if args.wait:
        return follow(client, data, as_json=args.json, timeout=args.timeout)
    if args.json:
        print_json(data)
        return 0
    print(
        keyvalues(
            [
                ("job", data["id"]),
                ("kind", data["kind"]),
                ("app", data["app"]),
                ("status", data["status"]),
                ("attempts", f"{data['attempts']} of {data['max_attempts']}"),
                ("by", data["created_by"]),
                ("created", data["created_at"]),
                ("started", data["started_at"]),
                ("finished", data["finished_at"]),
                ("leader", f"{data['owner']} (term {data['term']})" if data["owner"] else None),
                ("error", data["error"]),
                ("result", data["result"]),
            ]
        )
    )
    if data["steps"]:
        print("steps:")
        for step in data["steps"]:
            print(_step_line(step))
    return 0 if data["status"] != "failed" else 1


def logs(args: Args, settings: Settings) -> int:
    client = _client(settings)
    params = {"lines": str(args.lines)}
    if args.follow:
        params["follow"] = "1"
    try:
        with client.stream("GET", f"/api/v1/apps/{args.name}/logs", params=params) as lines:
            for line in lines:
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    return 0


def cluster(args: Args, settings: Settings) -> int:
    client = _client(settings)
    if args.action == "leader":
        data = client.get("/api/v1/cluster/leader")
        if args.json:
            print_json(data)
        elif data["leader"]:
            print(
                f"{data['leader']} leads (term {data['term']}, lease until {data['expires_at']}) at {data['address']}"
            )
        else:
            print(f"no leader (last term {data['term']})")
        return 0 if data["leader"] else 1
    data = client.get("/api/v1/cluster/status")
    if args.json:
        print_json(data if args.action == "status" else data["nodes"])
        return 0
    if args.action == "status":
        lead = data["leader"]
        print(
            keyvalues(
                [
                    ("this node", data["node"] + (" (leader)" if data["is_leader"] else "")),
                    ("leader", f"{lead['leader']} term {lead['term']}" if lead["leader"] else "none"),
                    ("lease until", lead["expires_at"]),
                ]
            )
        )
        print()
    rows = [
        (
            n["node_id"],
            "leader" if n["leader"] else "",
            "alive" if n["alive"] else "gone",
            n["address"],
            n["version"],
            ago(n["heartbeat_at"]),
            "-" if n["routes_generation"] is None else str(n["routes_generation"]),
        )
        for n in data["nodes"]
    ]
    print(table(rows, ("NODE", "ROLE", "STATE", "ADDRESS", "VERSION", "HEARTBEAT", "ROUTES")))
    return 0


def host(args: Args, settings: Settings) -> int:
    """`host drain NAME`: its replicas moved to other hosts with no failed request, then Swarm's drain;
    `host activate NAME`: Swarm may place replicas there again. Both are jobs (`--wait` follows them)."""
    return _submit(args, settings, "POST", f"/api/v1/hosts/{args.name}/{args.action}")


def hosts(args: Args, settings: Settings) -> int:
    """The Swarm's hosts (runtime: swarm); `orchestry cluster nodes` lists the controllers instead."""
    data = _client(settings).get("/api/v1/hosts")
    if args.json:
        print_json(data["hosts"])
        return 0
    rows = [
        (
            h["name"],
            h["address"],
            h["state"],
            h["availability"],
            h["role"] + (" (leader)" if h["leader"] else ""),
            ",".join(f"{k}={v}" for k, v in sorted(h["labels"].items())) or "-",
            str(h["replicas"]),
        )
        for h in data["hosts"]
    ]
    print(table(rows, ("HOST", "ADDRESS", "STATE", "AVAILABILITY", "ROLE", "LABELS", "REPLICAS")))
    return 0
