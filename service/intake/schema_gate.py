"""The inbox takes events only into the schema this code was written for: until the database
is found at head each webhook asks it (one query); a yes is kept for the process, so a
database migrated (or reachable) later takes events without a restart."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.db.schema import check_schema
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


def upgrade_due(exc: SchemaNotCurrent) -> str:
    """The reason a webhook is refused: the same words as the worker's."""
    return f"{exc}: run `meterfix db upgrade` first"
