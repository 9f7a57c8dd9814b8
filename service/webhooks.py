"""POST /webhooks (filled in by the intake issue)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhooks", __name__)
