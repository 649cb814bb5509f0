"""`orchestry webhook add URL --events a,b [--name N] [--format slack]`,
`webhook delete|disable|enable|test|deliveries NAME`, `orchestry webhooks` (the list)."""

from __future__ import annotations

import argparse
import time

from orchestry.cli.client import Client, CliError
from orchestry.cli.output import ago, print_json, table
from orchestry.config import Settings

Args = argparse.Namespace
TEST_WAIT_SECONDS = 30.0


def webhook(args: Args, settings: Settings) -> int:
    client = Client(settings.urls, settings.token)
    if not args.target:
        what = "URL" if args.action == "add" else "NAME"
        raise CliError(f"webhook {args.action} needs a {what}", code=2)
    if args.action == "add":
        return _add(client, args)
    if args.action == "delete":
        client.request("DELETE", f"/api/v1/webhooks/{args.target}")
        print(f"webhook {args.target} deleted")
        return 0
    if args.action in ("disable", "enable"):
        data = client.request("POST", f"/api/v1/webhooks/{args.target}/{args.action}").json()
        if args.json:
            print_json(data)
            return 0
        state = "enabled" if data["enabled"] else "disabled"
        dropped = data.get("dropped") or 0
        note = f" ({dropped} waiting deliveries dropped)" if dropped else ""
        print(f"webhook {args.target} {state}{note}" if data["changed"] else f"webhook {args.target} already {state}")
        return 0
    if args.action == "test":
        return _test(client, args)
    return _deliveries(client, args)


def _add(client: Client, args: Args) -> int:
    if not args.events:
        raise CliError("webhook add needs --events (e.g. job.failed,leader or '*')", code=2)
    body: dict[str, object] = {
        "url": args.target,
        "events": [e.strip() for e in args.events.split(",") if e.strip()],
        "format": args.format,
    }
    if args.name:
        body["name"] = args.name
    data = client.request("POST", "/api/v1/webhooks", json=body).json()
    if args.json:
        print_json(data)
        return 0
    print(f"webhook {data['name']} added: {data['url']} for {', '.join(data['events'])} ({data['format']})")
    print(f"signing secret (shown once, keep it for the receiver): {data['secret']}")
    return 0


def _test(client: Client, args: Args) -> int:
    """Enqueue a test delivery, then wait for its first attempt's outcome."""
    data = client.request("POST", f"/api/v1/webhooks/{args.target}/test").json()
    delivery_id = data["delivery"]["id"]
    deadline = time.monotonic() + TEST_WAIT_SECONDS
    while True:
        rows = client.get(f"/api/v1/webhooks/{args.target}/deliveries", params={"limit": 200})["deliveries"]
        found = next((d for d in rows if d["id"] == delivery_id), None)
        if found is None or found["attempts"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if args.json:
        print_json(found)
    if found is None:
        raise CliError(f"the test delivery to {args.target} is gone (was the webhook deleted?)")
    if found["status"] == "delivered":
        if not args.json:
            took = f"HTTP {found['response_code']} in {found['duration_ms']} ms"
            print(f"test delivery {found['key']}: delivered, {took}")
        return 0
    if found["attempts"] == 0:
        waited = f"{TEST_WAIT_SECONDS:.0f} s"
        raise CliError(f"test delivery {found['key']}: not attempted within {waited} (is a leader up?)")
    code = f"HTTP {found['response_code']}" if found["response_code"] else "no answer"
    retry = "; it is retried with backoff" if found["status"] == "pending" else ""
    raise CliError(f"test delivery {found['key']}: {found['status']} ({code}): {found['error']}{retry}")


def _deliveries(client: Client, args: Args) -> int:
    data = client.get(f"/api/v1/webhooks/{args.target}/deliveries", params={"limit": args.limit})
    if args.json:
        print_json(data)
        return 0
    rows = [
        (
            d["id"],
            ago(d["created_at"]),
            d["event_type"],
            d["status"],
            d["attempts"],
            d["response_code"],
            d["duration_ms"],
            (d["error"] or "")[:60] or None,
        )
        for d in data["deliveries"]
    ]
    headers = ("ID", "CREATED", "EVENT", "STATUS", "ATTEMPTS", "CODE", "MS", "ERROR")
    print(table(rows, headers) if rows else f"no deliveries for webhook {args.target}")
    return 0


def webhooks(args: Args, settings: Settings) -> int:
    data = Client(settings.urls, settings.token).get("/api/v1/webhooks")
    if args.json:
        print_json(data)
        return 0
    rows = [
        (
            w["name"],
            "enabled" if w["enabled"] else "disabled",
            w["url"],
            ",".join(w["events"]),
            w["format"],
            w["counts"]["delivered"],
            w["counts"]["failed"],
            w["counts"]["dropped"],
        )
        for w in data["webhooks"]
    ]
    headers = ("NAME", "STATE", "URL", "EVENTS", "FORMAT", "DELIVERED", "FAILED", "DROPPED")
    print(table(rows, headers) if rows else "no webhooks")
    return 0
