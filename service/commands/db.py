"""`meterfix db upgrade`."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from service.db.migrate import upgrade
from service.errors import SchemaNewer
from service.runtime import runtime


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_appcontext
def upgrade_command() -> None:
    """Apply every migration (migrations ship inside the package)."""
    try:
        upgrade(runtime().settings.database_url)
    except SchemaNewer as exc:  # says what to do: no "migration failed" before it
        raise click.ClickException(exc.reason) from exc
    except Exception as exc:  # one clear line, no traceback
        raise click.ClickException(f"migration failed: {_one_line(exc)}") from exc
    click.echo("database is at the latest schema")


def _one_line(exc: Exception) -> str:
    """The error's name and first line: a database error's own message (the driver's,
    `orig`) without the SQL and the link SQLAlchemy adds on lines of their own."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {reason[0]}"


COMMANDS = [db_group]
