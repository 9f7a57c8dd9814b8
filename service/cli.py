"""`meterfix` console script: a click group over the commands `create_app` registers.

Listing the commands and printing help build no app (no settings, no database, no start-up
line before the help): the commands are collected from `service.commands` on a bare Flask
object, and a command that needs the app builds it when it runs (`with_appcontext`, through
the `ScriptInfo` below). Flask's own options (`--app`, `--env-file`, `--debug`) are not
offered: the app is always meterfix's. `.env` is loaded as Flask's CLI loads it.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo, load_dotenv
from pydantic import ValidationError

from service.commands import remediate
from service.config import Settings
from service.logs import Role, configure_logging

# The process role in every log line; any other command is `cli`.
ROLES = {"serve": Role.WEB, "worker": Role.WORKER, "poll": Role.POLLER, "sandbox": Role.SANDBOX}


def _create_app() -> Flask:
    """Bad configuration is one clear line (and exit 1), not a traceback."""
    from service.app import create_app  # only when a command needs the app

    try:
        return create_app()
    except ValidationError as exc:
        raise click.ClickException(f"bad configuration: {_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())


@functools.cache
def _app_commands() -> dict[str, click.Command]:
    """The commands `create_app` registers, collected without building the app."""
    from service.commands import register_commands

    collector = Flask(__name__)  # bare: only its `cli` group is used
    register_commands(collector)
    return dict(collector.cli.commands)


def _meterfix_version() -> str:
    try:
        return version("meterfix")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class MeterfixGroup(click.Group):
    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        load_dotenv()
        extra.setdefault("obj", ScriptInfo(create_app=_create_app, set_debug_flag=False))
        return super().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_app_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or _app_commands().get(cmd_name)


@click.group(cls=MeterfixGroup)
@click.version_option(
    version=_meterfix_version(), prog_name="meterfix", message="%(prog)s %(version)s"
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """meterfix: turn Stripe usage-import errors into fixed usage."""
    configure_logging(ROLES.get(ctx.invoked_subcommand or "", Role.CLI))
    _apply_log_settings()


def _apply_log_settings() -> None:
    """LOG_LEVEL and LOG_FORMAT for commands that build no app (an app applies them too)."""
    try:
        settings = Settings()
    except ValidationError:  # the command that needs the settings says what is wrong
        return
    configure_logging(level=settings.log_level, log_format=settings.log_format)


# `validate` and `remediate` work on files only: registered on the group itself, they run
# without building the app (no database, no web stack imported: a faster start per file).
for _command in remediate.COMMANDS:
    main.add_command(_command)
