"""`orchestry secret`: set (value from stdin or --value), list, delete; keygen prints a new key."""

from __future__ import annotations

import argparse
import sys

from orchestry.cli.client import Client, CliError
from orchestry.cli.output import ago, print_json, table
from orchestry.config import Settings
from orchestry.config.secretbox import new_key

Args = argparse.Namespace


def secret(args: Args, settings: Settings) -> int:
    if args.action == "keygen":
        print(new_key())
        return 0
    client = Client(settings.urls, settings.token)
    if args.action == "list":
        data = client.get("/api/v1/secrets")
        if args.json:
            print_json(data)
            return 0
        rows = [(s["name"], ago(s["updated_at"]), s["updated_by"]) for s in data["secrets"]]
        print(table(rows, ("NAME", "UPDATED", "BY")) if rows else "no secrets")
        return 0
    if not args.name:
        raise CliError(f"secret {args.action} needs a NAME", code=2)
    if args.action == "delete":
        client.request("DELETE", f"/api/v1/secrets/{args.name}")
        print(f"secret {args.name} deleted")
        return 0
    value = args.value if args.value is not None else _stdin_value()
    resp = client.request("PUT", f"/api/v1/secrets/{args.name}", json={"value": value})
    print(f"secret {args.name} {'created' if resp.status_code == 201 else 'replaced'}")
    return 0


def _stdin_value() -> str:
    if sys.stdin.isatty():
        print("value (end with Ctrl-D): ", end="", file=sys.stderr, flush=True)
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") and value.count("\n") == 1 else value
