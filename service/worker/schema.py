"""Whether the database holds the schema this code was written for: the worker and
`meterfix replay` refuse to start on one never migrated or behind (`meterfix db upgrade`)."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from service.db.migrate import MIGRATIONS_DIR
from service.errors import SchemaNotCurrent


def check_schema(engine: Engine) -> None:
    """Raises SQLAlchemyError when the database is unreachable, SchemaNotCurrent when it was
    never migrated or is behind this code."""
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if not current:
        raise SchemaNotCurrent("the database is not migrated")
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {script.revision for script in scripts.walk_revisions()}
    # A revision this code does not know is a newer schema: not ours to refuse.
    if current <= known and current != set(scripts.get_heads()):
        raise SchemaNotCurrent("the database schema is not up to date")
