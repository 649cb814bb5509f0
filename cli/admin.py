"""CLI commands that act on this machine: serve, db, token, config."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from orchestry.cli.client import CliError
from orchestry.cli.output import ago, keyvalues, print_json, table
from orchestry.config import SETTINGS, Settings
from orchestry.config.heap import settle_heap
from orchestry.config.logs import setup_logging
from orchestry.config.private import private_umask, secure_data_dir
from orchestry.models.cluster import ControllerNode, db_now
from orchestry.models.db import make_engine, make_sessionmaker, normalize_url
from orchestry.models.installation import installation_id
from orchestry.models.schema import current_revision, head_revision, upgrade
from orchestry.models.tokens import ApiToken, any_tokens, create_token
from orchestry.workflows.access import is_loopback

Args = argparse.Namespace
log = logging.getLogger("orchestry.serve")


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    try:
        return make_engine(settings.database_url)
    except Exception as exc:  # a malformed URL: say so in one line
        raise CliError(f"database URL {settings.database_url!r} is not usable: {exc}", code=2) from None


def _safe_url(settings: Settings) -> str:
    return normalize_url(settings.database_url).render_as_string(hide_password=True)


def _is_loopback(host: str) -> bool:
    return is_loopback(host)


def _public_nodes(session: Session, settings: Settings) -> list[str]:
    """The live nodes (heartbeat within 3 leases, as `cluster` counts them) whose API listens on a
    non-loopback address: without a token they refuse every request."""
    since = db_now(session) - timedelta(seconds=3 * settings.lease_seconds)
    rows = session.execute(
        select(ControllerNode.node_id, ControllerNode.address).where(ControllerNode.heartbeat_at >= since)
    ).all()
    return [f"{node} ({address})" for node, address in rows if not is_loopback(urlsplit(address).hostname or "")]


def _unreachable(settings: Settings, exc: OperationalError, hint: str = "") -> CliError:
    first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    return CliError(f"cannot reach the database {_safe_url(settings)}: {first}{hint}")


def _upgrade(settings: Settings) -> None:
    private_umask()  # a database created by `db upgrade` is 0600 too
    engine = _engine(settings)
    try:
        upgrade(engine)
    except OperationalError as exc:
        raise _unreachable(settings, exc) from None
    finally:
        engine.dispose()


def serve(args: Args, settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    secure_data_dir(settings.data_dir)  # 0700, its files 0600, and a umask of 077 for what comes later
    if not args.no_migrate:
        _upgrade(settings)
    engine = _engine(settings)
    if not _is_loopback(settings.host):
        with make_sessionmaker(engine)() as session:
            if not any_tokens(session):
                raise CliError(
                    f"refusing to listen on {settings.host} while no API token exists",
                    ["create one with `orchestry token create NAME --role operator`, or bind 127.0.0.1"],
                    code=2,
                )
    import waitress

    from orchestry.controller.node import Controller
    from orchestry.web.app import create_app

    with make_sessionmaker(engine).begin() as session:
        installation = installation_id(session)
    runtime = make_runtime(settings, installation)
    _refuse_foreign_containers(runtime, settings.cluster_name, installation)
    try:
        controller = Controller(settings, engine, runtime)
    except ValueError as exc:  # a combination of settings that each passed alone (e.g. nginx paths)
        raise CliError(str(exc), code=2) from None
    # waitress buffers a whole body before Flask sees it; up to 16x the limit Flask answers the 413 in JSON,
    # beyond that waitress cuts the upload off itself (still a 413).
    app = create_app(
        settings, engine, wake=controller.dispatcher.wake, runtime=runtime, components=controller.components.snapshot
    )
    server = waitress.create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="orchestry",
        max_request_body_size=16 * settings.max_spec_bytes,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    controller.start()
    frozen = settle_heap()  # start-up's objects out of every later full collection (config/heap.py says why)
    log.info(
        "orchestry listening",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "node": settings.node_id,
            "cluster": settings.cluster_name,
            "database": _safe_url(settings),
            "heap_frozen": frozen,
        },
    )
    try:
        server.run()  # returns on SIGINT/SIGTERM (waitress catches the KeyboardInterrupt)
    finally:
        log.info("shutting down", extra={"node": settings.node_id})
        controller.stop()
        server.close()
        engine.dispose()
    return 0


def make_runtime(settings: Settings, installation: str | None) -> Any:
    """The runtime the `runtime` setting names, on the engine `docker_host` names (else DOCKER_HOST)."""
    if settings.runtime == "swarm":
        from orchestry.runtime.swarm_engine import SwarmEngine

        return SwarmEngine(base_url=settings.docker_host or None, installation=installation)
    from orchestry.runtime.docker_engine import DockerEngine

    return DockerEngine(base_url=settings.docker_host or None, installation=installation)


def _refuse_foreign_containers(runtime: Any, cluster: str, installation: str) -> None:
    """Another installation (its own database) already runs containers under this cluster name on this engine:
    starting would fight over them. Unlabelled containers of the cluster (made before installation ids) are
    adopted as this installation's."""
    from orchestry.runtime.types import EngineUnavailable

    try:
        foreign = runtime.foreign_containers(cluster)
    except EngineUnavailable as exc:
        log.warning("could not check for another installation's containers", extra={"error": str(exc)})
        return
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CliError(
            f"refusing to start: {len(foreign)} container(s) of cluster {cluster!r} on this Docker engine belong to "
            f"another Orchestry installation (another database): {shown}",
            [
                f"this installation is {installation}; give this one its own cluster_name "
                "(ORCHESTRY_CLUSTER_NAME), or stop the other one",
            ],
            code=2,
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def db(args: Args, settings: Settings) -> int:
    if args.action == "upgrade":
        _upgrade(settings)
    engine = _engine(settings)
    try:
        current = current_revision(engine)
    except OperationalError as exc:
        raise _unreachable(settings, exc) from None
    finally:
        engine.dispose()
    head = head_revision()
    if args.json:
        print_json({"database": _safe_url(settings), "current": current, "head": head})
    else:
        state = "up to date" if current == head else f"behind (head is {head}; run `orchestry db upgrade`)"
        print(f"database {_safe_url(settings)}: schema {current or 'empty'}, {state}")
    return 0


def token(args: Args, settings: Settings) -> int:
    if args.action in ("create", "revoke") and not args.name:
        raise CliError(f"token {args.action} needs a NAME", code=2)
    if args.name is not None and not (0 < len(args.name) <= 63 and args.name.replace("-", "").isalnum()):
        raise CliError("token name: must be 1-63 letters, digits or '-'", code=2)
    engine = _engine(settings)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            if args.action == "create":
                row, plain = create_token(session, args.name, args.role)
                try:
                    session.commit()
                except IntegrityError:
                    raise CliError(f"a token named {args.name!r} already exists") from None
                if args.json:
                    print_json({"name": row.name, "role": row.role, "token": plain})
                else:
                    print(plain)
                    print(f"token {row.name!r} ({row.role}) created; it is shown only once", file=sys.stderr)
            elif args.action == "list":
                rows = session.query(ApiToken).order_by(ApiToken.name).all()
                if args.json:
                    print_json([{"name": r.name, "role": r.role, "created_at": r.created_at.isoformat()} for r in rows])
                else:
                    print(
                        table(
                            [(r.name, r.role, ago(r.created_at.isoformat())) for r in rows], ("NAME", "ROLE", "CREATED")
                        )
                        if rows
                        else "no tokens: the API is open (loopback only)"
                    )
            else:
                found = session.query(ApiToken).filter_by(name=args.name).one_or_none()
                if found is None:
                    raise CliError(f"no token named {args.name!r}")
                last = session.query(ApiToken).count() == 1
                public = _public_nodes(session, settings) if last else []
                if public and not args.force:
                    raise CliError(
                        f"refusing to revoke {args.name!r}, the last API token, while nodes listen on a "
                        f"non-loopback address: {', '.join(public)}",
                        [
                            "create another token first, or pass --force: those nodes then refuse every request "
                            "until a token exists"
                        ],
                    )
                session.delete(found)
                session.commit()
                remaining = any_tokens(session)
                if remaining:
                    print(f"token {args.name!r} revoked")
                elif public:
                    print(
                        f"token {args.name!r} revoked; no token left: {', '.join(public)} now refuse every request "
                        "until a token exists",
                        file=sys.stderr,
                    )
                else:
                    print(f"token {args.name!r} revoked; no token left: the API is open (loopback only)")
    except OperationalError as exc:
        raise _unreachable(settings, exc, " (run `orchestry db upgrade` first?)") from None
    finally:
        engine.dispose()
    return 0


def config(args: Args, settings: Settings) -> int:
    shown = {
        s.name: (
            ("***" if s.name in ("token", "secret_key") and settings.values[s.name] else settings.values[s.name]),
            settings.sources[s.name],
            s.env,
        )
        for s in SETTINGS
    }
    if args.json:
        print_json(
            {
                "config_file": settings.config_file,
                "controllers": settings.urls,
                "settings": {k: {"value": v, "source": src, "env": env} for k, (v, src, env) in shown.items()},
            }
        )
        return 0
    print(keyvalues([("controller", ", ".join(settings.urls)), ("config file", settings.config_file or "(none)")]))
    print()
    print(table([(k, v, src, env) for k, (v, src, env) in shown.items()], ("SETTING", "VALUE", "FROM", "ENV")))
    return 0
