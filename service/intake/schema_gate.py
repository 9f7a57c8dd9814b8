"""The inbox takes events only into the schema this code was written for: until the database
is found at head each webhook asks it (one query); a yes is kept for the process, so a
database migrated (or reachable) later takes events without a restart.

The check is the worker's (`service/worker/schema.py:check_schema`) said again: intake may not
import the worker (pyproject.toml's import contracts), and a test holds the two to the same
answers (tests/unit/test_intake_schema_gate.py)."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.db.migrate import MIGRATIONS_DIR
from service.errors import InboxUnavailable, SchemaNotCurrent


class SchemaGate:
    """Whether the inbox's database is known to be at head (asked until it is)."""

    def __init__(self) -> None:
        self.current = False

    def require(self, engine: Engine) -> None:
        """SchemaNotCurrent when the database was never migrated or is behind this code;
        InboxUnavailable when it cannot be asked."""
        if self.current:
            return
        try:
            check_schema(engine)
        except SQLAlchemyError as exc:
            raise InboxUnavailable(type(exc).__name__) from exc
        self.current = True


def check_schema(engine: Engine) -> None:
    """SchemaNotCurrent when the database was never migrated or is behind this code; a
    revision this code does not know is a newer schema, not ours to refuse."""
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


def upgrade_due(exc: SchemaNotCurrent) -> str:
    """The reason a webhook is refused: the same words as the worker's."""
    return f"{exc}: run `meterfix db upgrade` first"
