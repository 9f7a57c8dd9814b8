"""Liveness and readiness: /healthz answers while the process serves; /readyz checks the
database and nothing else (reachable, and at the schema this code was written for), so a load
balancer keeps taking webhooks while workers are down, and sends none to an instance whose
database is not migrated: every webhook would be refused there."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from service.errors import SchemaNotCurrent
from service.logs import log_event
from service.web.context import engine, upgrade_due

bp = Blueprint("health", __name__)

# The reason /readyz last logged, so a probe polled every few seconds logs it once.
NOT_READY_LOGGED = "meterfix.web.not_ready_logged"


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        with engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except SchemaNotCurrent as exc:
        reason = upgrade_due(exc)
        _log_not_ready_once(reason)
        return jsonify(status="unavailable", error=reason), 503
    except Exception as exc:  # any database failure means "not ready"
        return jsonify(status="unavailable", error=type(exc).__name__), 503
    current_app.extensions.pop(NOT_READY_LOGGED, None)
    return jsonify(status="ok"), 200


def _log_not_ready_once(reason: str) -> None:
    if current_app.extensions.get(NOT_READY_LOGGED) != reason:
        current_app.extensions[NOT_READY_LOGGED] = reason
        log_event("web.not_ready", level=logging.ERROR, reason=reason)
