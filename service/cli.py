"""`meterfix` console script: the Flask CLI group built around `create_app`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup
from pydantic import ValidationError

from service.app import create_app


def _create_app() -> Flask:
    """Bad configuration is one clear line (and exit 1), not a traceback."""
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
