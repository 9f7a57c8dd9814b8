"""What a web request needs from the app: its engine and settings, and who is acting."""

from __future__ import annotations

from flask import g, request
from sqlalchemy import Engine

from service.config import Settings
from service.runtime import runtime
from service.web.actions import Actor


def engine() -> Engine:
    return runtime().engine


def settings() -> Settings:
    return runtime().settings


def actor() -> Actor:
    return Actor(via=str(g.get("via", "dashboard")), address=request.remote_addr or "")
