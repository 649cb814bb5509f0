"""The Flask app factory: blueprints, JSON errors, authentication, a session per request."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response
from sqlalchemy.engine import Engine

from orchestry.config import Settings
from orchestry.models.db import make_engine, make_sessionmaker
from orchestry.runtime.types import Runtime
from orchestry.web import app_metrics, apps, cluster, events, health, jobs, logs, metrics, operations, scaling, system
from orchestry.web.auth import check_request
from orchestry.web.context import ApiContext, close_session
from orchestry.web.errors import install as install_errors
from orchestry.web.openapi import AppNameConverter


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    wake: Callable[[], None] | None = None,
    runtime: Runtime | None = None,
) -> Flask:
    app = Flask("orchestry")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_spec_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = engine or make_engine(settings.database_url)
    app.extensions["orchestry"] = ApiContext(
        settings=settings, sessions=make_sessionmaker(engine), wake=wake, runtime=runtime
    )
    app.before_request(check_request)
    app.teardown_appcontext(close_session)
    install_errors(app)
    app.url_map.converters["app"] = AppNameConverter

    @app.after_request
    def _node_header(response: Response) -> Response:
        response.headers["X-Orchestry-Node"] = settings.node_id  # which node answered, in a cluster
        return response

    for bp in (system.bp, apps.bp, operations.bp, health.bp, jobs.bp, logs.bp, events.bp, cluster.bp, metrics.bp):
        app.register_blueprint(bp)
    app.register_blueprint(app_metrics.bp)
    app.register_blueprint(scaling.bp)
    return app
