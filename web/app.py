"""The Flask app factory: blueprints, JSON errors, authentication, a session per request."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Flask, Response, request
from sqlalchemy.engine import Engine

from orchestry.config import Settings
from orchestry.models.db import LOCK_WAIT_MS, make_engine, make_read_sessionmaker, make_sessionmaker
from orchestry.runtime.types import Runtime
from orchestry.web import (
    app_metrics,
    apps,
    cluster,
    events,
    health,
    hosts,
    jobs,
    logs,
    metrics,
    operations,
    scaling,
    system,
)
from orchestry.web import certs as certs_api
from orchestry.web import registries as registries_api
from orchestry.web import secrets as secrets_api
from orchestry.web import webhooks as webhooks_api
from orchestry.web.auth import check_request
from orchestry.web.context import ApiContext, close_session
from orchestry.web.errors import install as install_errors
from orchestry.web.openapi import AppNameConverter, RegistryServerConverter, SecretNameConverter
from orchestry.web.ui import bp as dashboard
from orchestry.web.ui.access import check_dashboard_request, is_dashboard
from orchestry.web.ui.access import headers as dashboard_headers
from orchestry.workflows.components import ComponentState

API_LOCK_WAIT_MS = 5_000


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    wake: Callable[[], None] | None = None,
    runtime: Runtime | None = None,
    components: Callable[[], Mapping[str, ComponentState]] | None = None,
) -> Flask:
    app = Flask("orchestry")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_spec_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = engine or make_engine(settings.database_url)
    # A request waits this long at most for a lock (the database busy or locked), then answers 503.
    engine = engine.execution_options(**{LOCK_WAIT_MS: API_LOCK_WAIT_MS})
    app.extensions["orchestry"] = ApiContext(
        settings=settings,
        sessions=make_sessionmaker(engine),
        wake=wake,
        runtime=runtime,
        read_sessions=make_read_sessionmaker(engine),
        components=components,
    )

    def _check() -> None:
        # The dashboard's pages carry the token in a cookie and post forms with a CSRF token; the API's
        # paths never accept either (web/ui/access.py).
        if is_dashboard(request.path):
            check_dashboard_request()
        else:
            check_request()

    app.before_request(_check)
    app.after_request(dashboard_headers)
    app.teardown_appcontext(close_session)
    install_errors(app)
    app.url_map.converters["app"] = AppNameConverter
    app.url_map.converters["secret"] = SecretNameConverter
    app.url_map.converters["registry"] = RegistryServerConverter

    @app.after_request
    def _node_header(response: Response) -> Response:
        response.headers["X-Orchestry-Node"] = settings.node_id  # which node answered, in a cluster
        return response

    for bp in (system.bp, apps.bp, operations.bp, health.bp, jobs.bp, logs.bp, events.bp, cluster.bp, metrics.bp):
        app.register_blueprint(bp)
    app.register_blueprint(app_metrics.bp)
    app.register_blueprint(scaling.bp)
    app.register_blueprint(secrets_api.bp)
    app.register_blueprint(dashboard)
    app.register_blueprint(certs_api.bp)
    app.register_blueprint(hosts.bp)
    app.register_blueprint(registries_api.bp)
    app.register_blueprint(webhooks_api.bp)
    return app
