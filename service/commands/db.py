"""`meterfix db upgrade`."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from service.errors import SchemaNewer
from service.runtime import runtime


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_appcontext
def upgrade_command() -> None:
    """Apply every migration (migrations ship inside the package)."""
    url = runtime().settings.database_url
    try:
        before = _revision(url)
        upgrade(url)
        after = _revision(url)
    except SchemaNewer as exc:  # says what to do: no "migration failed" before it
        raise click.ClickException(exc.reason) from exc
    except Exception as exc:  # one clear line, no traceback
        raise click.ClickException(f"migration failed: {_one_line(exc)}") from exc
    click.echo(_applied(before, after))


def _revision(url: str) -> str | None:
    """The database's schema revision (None: never migrated, a new database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    return heads[0] if heads else None


def _applied(before: str | None, after: str | None) -> str:
    """What the upgrade did: a brand-new database was told "database is at the latest
    schema" after every migration had been applied to it."""
    if before == after:
        return f"database is already at the latest schema ({after}): nothing to apply"
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    count = len(list(scripts.iterate_revisions(after, before or "base")))
    migrations = f"{count} migration{'' if count == 1 else 's'}"
    if before is None:
        return f"created the database schema: applied {migrations} (now at {after})"
    return f"upgraded the database schema from {before}: applied {migrations} (now at {after})"


def _one_line(exc: Exception) -> str:
    """The error's name and first line: a database error's own message (the driver's,
    `orig`) without the SQL and the link SQLAlchemy adds on lines of their own."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {reason[0]}"


COMMANDS = [db_group]
