"""CLI commands, one module per area, registered explicitly on the app.

Modules are imported when the app registers them, not when this package is imported, so
`meterfix validate` and `meterfix remediate` start without the web and database stack.
"""

from __future__ import annotations

from flask import Flask


def register_commands(app: Flask) -> None:
    from service.commands import db, demo, digest, intake, poll, remediate, sandbox

    for module in (db, demo, digest, intake, poll, remediate, sandbox):
        for command in module.COMMANDS:
            app.cli.add_command(command)
