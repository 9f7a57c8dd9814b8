"""Whether the database holds the schema this code was written for. The worker, `meterfix
replay` and `poll` refuse to start on one never migrated or behind (`meterfix db upgrade`);
the web answers 503 with the reason until it is at head (`/readyz`, webhooks, API, pages)."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine

from service.db.migrate import MIGRATIONS_DIR
from service.errors import SchemaNotCurrent


def check_schema(engine: Engine) -> None:
    """Raises SQLAlchemyError when the database is unreachable, SchemaNotCurrent when it was
    never migrated or is behind this code; a revision this code does not know is a newer
    schema, not ours to refuse."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        current = frozenset(MigrationContext.configure(connection).get_current_heads())
    if not current:
        raise SchemaNotCurrent("the database is not migrated")
    known, heads = _revisions()
    if current <= known and current != heads:
        raise SchemaNotCurrent("the database schema is not up to date")


@cache  # the migrations shipped do not change while the process runs (reading them: ~8 ms)
def _revisions() -> tuple[frozenset[str], frozenset[str]]:
    """Every revision this code ships, and its heads."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    known = frozenset(script.revision for script in scripts.walk_revisions())
    return known, frozenset(scripts.get_heads())
