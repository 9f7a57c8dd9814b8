"""What a web request needs from the app: its engine and settings, and who is acting."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import Engine

from service.config import Settings
from service.web.actions import Actor


def engine() -> Engine:
    from service.app import runtime  # the app factory imports the blueprints

    return runtime().engine


def settings() -> Settings:
    from service.app import runtime

    return runtime().settings


def actor() -> Actor:
    return Actor(via=str(g.get("via", "dashboard")), address=request.remote_addr or "")
