"""Application factory: `create_app(settings)` builds the Flask app; nothing runs at import."""

from __future__ import annotations

import logging
import os

from flask import Flask
from sqlalchemy.engine import make_url

from service.commands import register_commands
from service.config import Settings, load_settings
from service.config.diagnostics import unknown_variables
from service.logs import configure_logging, log_event
from service.runtime import Runtime, install


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = None  # our own limit answers 413 with a JSON reason
    install(app, Runtime(settings))
    _register_blueprints(app, settings)
    register_commands(app)
    _announce(settings)
    return app


def _register_blueprints(app: Flask, settings: Settings) -> None:
    from service.intake.webhooks import bp as webhooks_bp
    from service.web.metrics import bp as metrics_bp
    from service.web.setup import register_web

    register_web(app, settings)
    app.register_blueprint(metrics_bp)
    app.register_blueprint(webhooks_bp)


_announced: set[str] = set()  # the start-up line is said once per process, not per app


def _announce(settings: Settings) -> None:
    if settings.database_url in _announced:
        return
    _announced.add(settings.database_url)
    for name, like in unknown_variables(os.environ):
        log_event(
            "config.unknown_variable",
            level=logging.WARNING,
            message=f"{name} is not a meterfix setting: ignored"
            + (f" (did you mean {like}?)" if like else ""),
        )
    if settings.embedded_sandbox:
        log_event(
            "config.embedded_defaults",
            level=logging.WARNING,
            message="no Stripe settings: using the bundled sandbox",
            stripe_api_base=settings.stripe_api_base,
            # never its password (the line is written at every start)
            database_url=make_url(settings.database_url).render_as_string(hide_password=True),
            bucket_url=settings.bucket_url,
        )
    elif not settings.stripe_webhook_secrets:
        log_event(
            "config.no_webhook_secret",
            level=logging.ERROR,
            message="STRIPE_WEBHOOK_SECRETS is empty: every webhook will be rejected",
        )
