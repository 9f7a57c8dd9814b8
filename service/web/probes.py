"""Liveness and readiness: /healthz answers while the process serves; /readyz checks the
database and nothing else, so a load balancer keeps taking webhooks while workers are down."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from service.web.context import engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    try:
        with engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not ready"
        return jsonify(status="unavailable", error=type(exc).__name__), 503
    return jsonify(status="ok"), 200
