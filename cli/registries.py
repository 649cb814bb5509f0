"""`orchestry registry login SERVER --username U --password-stdin`, `registry logout SERVER`, `registries`."""

from __future__ import annotations

import argparse
import getpass
import sys
from urllib.parse import quote

from orchestry.cli.client import Client, CliError
from orchestry.cli.output import ago, print_json, table
from orchestry.config import Settings
from orchestry.workflows.registry import InvalidServer, check_server

Args = argparse.Namespace


def registry(args: Args, settings: Settings) -> int:
    if args.action == "list":
        return registries(args, settings)
    if not args.server:
        raise CliError(f"registry {args.action} needs a SERVER (host[:port], e.g. registry.example.com:5000)", code=2)
    try:
        server = check_server(args.server)
    except InvalidServer as exc:
        raise CliError(f"SERVER {args.server!r}: {exc}", code=2) from None
    client = Client(settings.urls, settings.token)
    path = f"/api/v1/registries/{quote(server, safe=':[]')}"
    if args.action == "logout":
        client.request("DELETE", path)
        print(f"logged out of {server}")
        return 0
    if not args.username:
        raise CliError("registry login needs --username", code=2)
    password = _password(args.password_stdin)
    # The controller asks the registry first (as `docker login` does): a wrong password is refused here.
    params = {"check": "false"} if args.no_check else {}
    resp = client.request("PUT", path, json={"username": args.username, "password": password}, params=params)
    how = "stored" if resp.status_code == 201 else "replaced"
    print(f"logged in to {server} as {args.username} ({how}{', not checked' if args.no_check else ''})")
    return 0


def registries(args: Args, settings: Settings) -> int:
    data = Client(settings.urls, settings.token).get("/api/v1/registries")
    if args.json:
        print_json(data)
        return 0
    rows = [(r["server"], r["username"], ago(r["updated_at"]), r["updated_by"]) for r in data["registries"]]
    print(table(rows, ("SERVER", "USERNAME", "UPDATED", "BY")) if rows else "no registries")
    return 0


def _password(from_stdin: bool) -> str:
    """From stdin (`--password-stdin`, as `docker login` takes it: out of shell history and `ps`), else asked
    for on a terminal."""
    if from_stdin:
        value = sys.stdin.read()
        return value.removesuffix("\n").removesuffix("\r")
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    raise CliError("registry login: pass the password on stdin with --password-stdin", code=2)
