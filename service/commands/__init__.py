"""CLI commands, one module per area, registered explicitly on the app."""

from __future__ import annotations

from flask import Flask

from service.commands import db, demo, intake, poll, remediate, sandbox


def register_commands(app: Flask) -> None:
    for module in (db, demo, intake, poll, remediate, sandbox):
        for command in module.COMMANDS:
            app.cli.add_command(command)
