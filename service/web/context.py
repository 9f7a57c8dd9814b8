"""What a web request needs from the app: its engine (once the database's schema is this
code's), its settings, and who is acting."""

from __future__ import annotations

from flask import current_app, g, request
from sqlalchemy import Engine

from service.config import Settings
from service.db.schema import check_schema
from service.errors import SchemaNotCurrent
from service.runtime import runtime
from service.web.actions import Actor

SCHEMA_CURRENT = "meterfix.web.schema_current"


def engine() -> Engine:
    """The app's engine. Until its schema is found at head, each call asks the database
    (one query): SchemaNotCurrent when it was never migrated or is behind, SQLAlchemyError
    when it is unreachable. A yes is kept, so a migrated database is asked once a process,
    and one migrated (or reachable) later is served without a restart."""
    found = runtime().engine
    if not current_app.extensions.get(SCHEMA_CURRENT):
        check_schema(found)
        current_app.extensions[SCHEMA_CURRENT] = True
    return found


def upgrade_due(exc: SchemaNotCurrent) -> str:
    """The reason the web gives for refusing: the same words as the worker's."""
    return f"{exc}: run `meterfix db upgrade` first"


def settings() -> Settings:
    return runtime().settings


def actor() -> Actor:
    return Actor(via=str(g.get("via", "dashboard")), address=request.remote_addr or "")
