"""`meterfix` console script: the Flask CLI group built around `create_app`."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from service.app import create_app


@click.group(cls=FlaskGroup, create_app=lambda: create_app(), add_default_commands=False)
def main() -> None:
    """meterfix: turn Stripe usage-import errors into fixed usage."""
