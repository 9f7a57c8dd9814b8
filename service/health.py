"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    from service.app import runtime

    try:
        with runtime().engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not ready"
        return jsonify(status="unavailable", error=type(exc).__name__), 503
    return jsonify(status="ok"), 200
