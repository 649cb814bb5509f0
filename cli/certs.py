"""`orchestry cert add --cert F --key F [--name N]`, `cert delete NAME`, `orchestry certs` (the list)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestry.cli.client import Client, CliError
from orchestry.cli.output import print_json, table
from orchestry.config import Settings

Args = argparse.Namespace


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"--{what} {path}: cannot be read ({exc.strerror})", code=2) from None


def cert(args: Args, settings: Settings) -> int:
    client = Client(settings.urls, settings.token)
    if args.action == "delete":
        if not args.name:
            raise CliError("cert delete needs a NAME", code=2)
        client.request("DELETE", f"/api/v1/certs/{args.name}")
        print(f"certificate {args.name} deleted")
        return 0
    if not args.cert or not args.key:
        raise CliError("cert add needs --cert FILE and --key FILE", code=2)
    body = {"cert": _read(args.cert, "cert"), "key": _read(args.key, "key")}
    if args.name:
        body["name"] = args.name
    resp = client.request("POST", "/api/v1/certs", json=body)
    data = resp.json()
    if args.json:
        print_json(data)
        return 0
    verb = "added" if resp.status_code == 201 else "replaced"
    print(f"certificate {data['name']} {verb}: {', '.join(data['hosts'])}, until {data['not_after']}")
    return 0


def certs(args: Args, settings: Settings) -> int:
    data = Client(settings.urls, settings.token).get("/api/v1/certs")
    if args.json:
        print_json(data)
        return 0
    rows = [
        (c["name"], ",".join(c["hosts"]), c["source"], c["state"], (c["not_after"] or "-")[:19], c["issuer"] or "-")
        for c in data["certs"]
    ]
    print(table(rows, ("NAME", "HOSTS", "SOURCE", "STATE", "EXPIRES", "ISSUER")) if rows else "no certificates")
    return 0
