"""CLI commands, one module per area, registered explicitly on the app.

`COMMANDS` names each command's module and the one line `meterfix --help` lists for it, so
listing the commands imports none of them: a command's module (and the rooms it uses) is
imported when that command runs or shows its own help. `meterfix validate` and `meterfix
remediate` start without the web and database stack. A test holds each line to the command's
own help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the app is the caller's; importing flask here would slow `meterfix --help`
    from flask import Flask


@dataclass(frozen=True)
class CommandEntry:
    module: str  # under service.commands
    summary: str  # the first sentence of the command's help
    uses_app: bool = True  # False: it works on files only and builds no app (`Adapters` alone)


COMMANDS: dict[str, CommandEntry] = {
    "db": CommandEntry("db", "Database schema."),
    "demo": CommandEntry(
        "demo", "Write a messy usage file into BUCKET_URL for the poller (or Stripe) to import."
    ),
    "digest": CommandEntry(
        "digest", "Send the digest of the last SINCE now (exit 1 with one line if a send failed)."
    ),
    "poll": CommandEntry(
        "poll", "Import new usage files from the bucket into Stripe (or only index them)."
    ),
    "remediate": CommandEntry(
        "remediate",
        "Write corrected and quarantine files for FILE into DIR (exit 0 when it ran).",
        uses_app=False,
    ),
    "replay": CommandEntry("intake", "Re-queue a stored event, whatever its state."),
    "sandbox": CommandEntry(
        "sandbox",
        "Run the local Stripe stand-in (keys from the settings, bucket from BUCKET_URL).",
    ),
    "serve": CommandEntry(
        "intake", "Run the web app with werkzeug (production runs gunicorn, see the Procfile)."
    ),
    "trigger": CommandEntry(
        "sandbox",
        "Create a sample event in the sandbox and deliver it signed to --to, like "
        "`stripe trigger`.",
    ),
    "validate": CommandEntry(
        "remediate",
        "Check FILE against the meters without writing anything; exit 1 if any row is invalid.",
        uses_app=False,
    ),
    "worker": CommandEntry(
        "intake",
        "Process the inbox and remediation tasks (and run the poller when MFX_POLLER is set).",
    ),
}


def load_command(name: str) -> click.Command | None:
    """The command `name`, its module imported now; None for an unknown name."""
    entry = COMMANDS.get(name)
    if entry is None:
        return None
    module = importlib.import_module(f"{__name__}.{entry.module}")
    defined: list[click.Command] = module.COMMANDS
    return next(command for command in defined if command.name == name)


def register_commands(app: Flask) -> None:
    """Every command on the app's CLI (`flask --app service.app`), each module imported."""
    for name in COMMANDS:
        command = load_command(name)
        assert command is not None  # every name of COMMANDS is defined by its module
        app.cli.add_command(command)
