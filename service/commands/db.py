"""`meterfix db upgrade`."""

from __future__ import annotations

import click
from flask.cli import with_appcontext

from service.db import upgrade
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
    except Exception as exc:  # one clear line, no traceback
        raise click.ClickException(f"migration failed: {type(exc).__name__}: {exc}") from exc
    click.echo("database is at the latest schema")


COMMANDS = [db_group]
