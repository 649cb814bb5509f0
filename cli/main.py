"""`orchestry`: the command line. Exit codes: 0 ok, 1 the operation failed, 2 bad usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from orchestry import __version__
from orchestry.cli import admin, apps, certs, doctor, metrics, ops, registries, scaling, secrets, webhooks
from orchestry.cli.client import CliError
from orchestry.config import ConfigError, load_settings


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line plus a hint, and exits 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _common(*, top: bool) -> _Parser:
    """Options taken before or after the command; after it they only override what was given before."""
    default = None if top else argparse.SUPPRESS
    common = _Parser(add_help=False, argument_default=default)
    common.add_argument("--config", metavar="PATH", help="config file (default $XDG_CONFIG_HOME/orchestry/config.yaml)")
    common.add_argument("--url", help="controller URL(s), comma-separated (env ORCHESTRY_URL)")
    common.add_argument("--token", help="API token (env ORCHESTRY_TOKEN)")
    common.add_argument(
        "--json", action="store_true", default=False if top else argparse.SUPPRESS, help="machine-readable output"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    parser = _Parser(
        prog="orchestry", description="Run containerized HTTP apps on Docker.", parents=[_common(top=True)]
    )
    parser.add_argument("--version", action="version", version=f"orchestry {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, func: Callable[..., int], help_: str, aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common], aliases=list(aliases))
        p.set_defaults(func=func)
        return p

    p = cmd("serve", admin.serve, "run the controller (API now; the scheduler on the leader)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default 8000)")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data directory)")
    p.add_argument("--data-dir", help="Orchestry's data directory")
    p.add_argument("--node-id", help="this controller's name in the cluster")
    p.add_argument("--log-format", choices=("text", "json"))
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--no-migrate", action="store_true", help="do not upgrade the database schema at start")
    p.add_argument("--nginx", choices=("managed", "external", "off"), help="which nginx routes apps")
    p.add_argument("--proxy-port", type=int, help="port nginx listens on for app traffic (default 8080)")
    p.add_argument("--nginx-conf", help="external: the existing nginx's main configuration")
    p.add_argument("--nginx-include", help="external: the file Orchestry writes, included inside http { }")
    p.add_argument("--nginx-reload-command", help="external: how to reload that nginx (run without a shell)")

    p = cmd("db", admin.db, "database schema: upgrade, current")
    p.add_argument("action", choices=("upgrade", "current"))
    p.add_argument("--database-url")
    p.add_argument("--data-dir")

    p = cmd("token", admin.token, "API tokens: create NAME --role R, list, revoke NAME")
    p.add_argument("action", choices=("create", "list", "revoke"))
    p.add_argument("name", nargs="?")
    p.add_argument("--role", choices=("viewer", "operator"), default="operator")
    p.add_argument(
        "--force",
        action="store_true",
        help="revoke the last token even while a node listens on a non-loopback address (it then refuses "
        "every request until a token exists)",
    )
    p.add_argument("--database-url")
    p.add_argument("--data-dir")

    cmd("config", admin.config, "show the configuration in force and where each value comes from")
    p = cmd("doctor", doctor.run, "this machine's dependencies (Docker, nginx with Lua): ok, or missing and the fix")
    p.add_argument("--install", action="store_true", help="on Debian/Ubuntu as root: install what is missing")

    p = cmd("secret", secrets.secret, "secrets: set NAME (value from stdin or --value), list, delete NAME, keygen")
    p.add_argument("action", choices=("set", "list", "delete", "keygen"))
    p.add_argument("name", nargs="?")
    p.add_argument("--value", help="the value (default: read from stdin, so it stays out of shell history)")

    p = cmd("registry", registries.registry, "private registries: login SERVER --username U --password-stdin, logout")
    p.add_argument("action", choices=("login", "logout", "list"))
    p.add_argument("server", nargs="?", help="host[:port] as in the image's name (registry.example.com:5000)")
    p.add_argument("-u", "--username")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="store the credentials without asking the registry first (one only the Docker engine reaches)",
    )
    cmd("registries", registries.registries, "private registries logged in to: servers and usernames")

    p = cmd("cert", certs.cert, "TLS certificates: add --cert FILE --key FILE [--name N], delete NAME")
    p.add_argument("action", choices=("add", "delete"))
    p.add_argument("name", nargs="?")
    p.add_argument("--cert", help="PEM certificates, the leaf first")
    p.add_argument("--key", help="the leaf's PEM private key (stored sealed, never shown again)")
    cmd("certs", certs.certs, "TLS certificates: domain, issuer, expiry, state")

    p = cmd(
        "webhook",
        webhooks.webhook,
        "webhooks: add URL --events E,F, delete NAME, disable NAME, enable NAME, test NAME, deliveries NAME",
    )
    p.add_argument("action", choices=("add", "delete", "disable", "enable", "test", "deliveries"))
    p.add_argument("target", nargs="?", metavar="URL|NAME", help="add: the URL; else the webhook's name")
    p.add_argument("--events", help="add: event types, families or '*', comma-separated (job.failed,leader)")
    p.add_argument("--name", help="add: the webhook's name (default: the URL's host)")
    p.add_argument("--format", choices=("json", "slack"), default="json", help='add: slack sends {"text": ...}')
    p.add_argument("--limit", type=int, default=30, help="deliveries: how many, newest first")
    cmd("webhooks", webhooks.webhooks, "webhooks: name, state, URL (host only), events, delivery counts")

    p = cmd("register", apps.register, "register app specs (YAML or JSON files, `-` for stdin)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--strict", action="store_true", help="refuse fields the spec format does not know")
    p.add_argument(
        "--dry-run", action="store_true", help="store nothing: print what would change and the replicas to replace"
    )

    cmd("list", apps.list_apps, "list apps")
    p = cmd("status", apps.status, "an app's desired state, revision and replicas; without NAME: the system")
    p.add_argument("name", nargs="?", help="without it: this node's database, Docker and nginx (exit 1 unless all up)")
    p = cmd("spec", apps.spec, "an app's spec")
    p.add_argument("name")
    p.add_argument("--raw", action="store_true", help="the document exactly as submitted")
    p.add_argument("--revision", type=int, help="a past revision")
    p = cmd("revisions", apps.revisions, "an app's revisions")
    p.add_argument("name")
    p = cmd("diff", apps.diff, "what changes between two revisions of an app, and the replicas to replace")
    p.add_argument("name")
    p.add_argument("--from", dest="from_", type=int, metavar="N", help="default: the revision before --to")
    p.add_argument("--to", type=int, metavar="M", help="default: the current revision")

    def waitable(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--wait", action="store_true", help="follow the job step by step until it ends")
        p.add_argument("--timeout", type=float, default=600, help="seconds --wait waits (default 600)")
        return p

    p = waitable(cmd("up", ops.up, "run an app's replicas", ("start",)))
    p.add_argument("name")
    p.add_argument("--replicas", type=int, help="how many (default: its minReplicas, at least 1)")
    p = waitable(cmd("down", ops.down, "stop every replica of an app", ("stop",)))
    p.add_argument("name")
    p = waitable(cmd("scale", ops.scale, "set an app's replica count"))
    p.add_argument("name")
    p.add_argument("replicas", type=int)
    p = waitable(cmd("delete", ops.delete, "stop and delete an app (its events are kept)"))
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="kill the replicas at once, no grace period")
    p.add_argument("--volumes", action="store_true", help="remove the app's volumes too (kept without it)")
    p = waitable(cmd("rollback", ops.rollback, "roll an app back to an earlier revision (a new revision restoring it)"))
    p.add_argument("name")
    p.add_argument("--to", type=int, metavar="N", help="the revision to restore (default: the previous one)")
    p = waitable(cmd("restart", ops.restart, "rolling restart of an app: one replica at a time, health-gated"))
    p.add_argument("name")
    p = cmd("jobs", ops.jobs, "jobs, newest first")
    p.add_argument("--app")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    p.add_argument("--kind", help="only jobs of this kind (deploy, scale, stop, delete, rollback, restart, ...)")
    p.add_argument("--limit", type=int, default=30)
    p = waitable(cmd("job", ops.job, "one job: steps, attempts, timings, error"))
    p.add_argument("id", type=int)
    p = cmd("cluster", ops.cluster, "the controller cluster: status, leader, nodes")
    p.add_argument("action", choices=("status", "leader", "nodes"), nargs="?", default="status")
    cmd("hosts", ops.hosts, "the hosts replicas run on (runtime: swarm): state, availability, labels, replicas")
    p = waitable(cmd("host", ops.host, "drain a host (its replicas moved elsewhere, health-gated) or activate it"))
    p.add_argument("action", choices=("drain", "activate"))
    p.add_argument("name", help="the host's name (as `orchestry hosts` lists it)")
    p = cmd("logs", ops.logs, "an app's replicas' logs, merged, each line with its replica")
    p.add_argument("name")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.add_argument("-f", "--follow", action="store_true")
    p = cmd("events", apps.events, "the audit trail, newest first")
    p.add_argument("name", nargs="?")
    p.add_argument("--type", help="event type or dotted prefix (app, app.created)")
    p.add_argument("--since", help="ISO 8601 time or a duration back from now (15m, 2h)")
    p.add_argument("--limit", type=int, default=50)
    p = cmd("metrics", metrics.metrics, "an app's CPU, memory and traffic: now, window means, per replica")
    p.add_argument("name", nargs="?", help="without it: every app's current figures")
    p.add_argument("--since", help="history from this ISO 8601 time or duration back (15m, 2h); see --json")
    p = cmd("scaling", scaling.scaling, "an app's scaling policy and the decisions that changed its replicas")
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change the policy (repeatable)")
    p.add_argument("--all", action="store_true", help="also the evaluations that changed nothing")
    p.add_argument("--limit", type=int, default=20)
    return parser


# Settings that some command also takes as a flag (named like the setting: --proxy-port -> proxy_port).
FLAG_SETTINGS = (
    "url",
    "token",
    "host",
    "port",
    "database_url",
    "data_dir",
    "node_id",
    "log_format",
    "log_level",
    "nginx",
    "proxy_port",
    "nginx_conf",
    "nginx_include",
    "nginx_reload_command",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: getattr(args, k, None) for k in FLAG_SETTINGS}
    try:
        settings = load_settings(flags, config_path=args.config)
    except ConfigError as exc:
        print(f"orchestry: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args, settings)
        return code
    except CliError as exc:
        print(f"orchestry: {exc}", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
