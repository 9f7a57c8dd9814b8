"""`meterfix` console script: the Flask CLI group built around `create_app`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup
from pydantic import ValidationError

from service.commands import remediate
from service.logs import configure_logging


def _create_app() -> Flask:
    """Bad configuration is one clear line (and exit 1), not a traceback."""
    from service.app import create_app  # only when a command needs the app

    try:
        return create_app()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise click.ClickException(f"bad configuration: {problems}") from exc


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False)
def main() -> None:
    """meterfix: turn Stripe usage-import errors into fixed usage."""
    configure_logging()


# `validate` and `remediate` work on files only: registered on the group itself, they run
# without building the app (no database, no web stack imported: a faster start per file).
for _command in remediate.COMMANDS:
    main.add_command(_command)
