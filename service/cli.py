"""`meterfix` console script: a click group over the commands of `service.commands`.

Listing the commands and printing help build no app and import no command module (no
settings, no database, no start-up line before the help; `meterfix --help` imports click and
little else): the list comes from `service.commands.COMMANDS`, a command's module is imported
when it runs or shows its own help, and a command that needs the app builds it when it runs
(`with_appcontext`, through the `ScriptInfo` below). Flask's own options (`--app`,
`--env-file`, `--debug`) are not offered: the app is always meterfix's. `.env` is loaded as
Flask's CLI loads it, before any command runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from service.commands import COMMANDS, load_command
from service.logs import Role, configure_logging

if TYPE_CHECKING:  # flask is imported when a command runs, not to list the commands
    from flask import Flask

# The process role in every log line; any other command is `cli`.
ROLES = {"serve": Role.WEB, "worker": Role.WORKER, "poll": Role.POLLER, "sandbox": Role.SANDBOX}


def _create_app() -> Flask:
    """Bad configuration is one clear line (and exit 1), not a traceback."""
    from pydantic import ValidationError

    from service.app import create_app  # only when a command needs the app
    from service.config.diagnostics import settings_problems

    try:
        return create_app()
    except ValidationError as exc:
        raise click.ClickException(f"bad configuration: {settings_problems(exc)}") from exc


def load_dotenv() -> None:
    """`.flaskenv`, then `.env` (which wins), each found from the working directory upward;
    a variable already set is kept. What `flask.cli.load_dotenv` does, so that `meterfix` and
    `flask --app service.app` read the same files; written here so that the file commands
    start without importing flask (python-dotenv reads the files)."""
    import dotenv

    values: dict[str, str | None] = {}
    for name in (".flaskenv", ".env"):
        if path := dotenv.find_dotenv(name, usecwd=True):
            values |= dotenv.dotenv_values(path, encoding="utf-8")
    for key, value in values.items():
        if key not in os.environ and value is not None:
            os.environ[key] = value


def _meterfix_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meterfix")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


class MeterfixGroup(click.Group):
    """The commands of `service.commands.COMMANDS`, each module imported only when its
    command runs or shows its help; the list in `meterfix --help` imports none of them."""

    def invoke(self, ctx: click.Context) -> Any:
        load_dotenv()
        return super().invoke(ctx)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = load_command(cmd_name)
        if command is not None and COMMANDS[cmd_name].uses_app and ctx.obj is None:
            from flask.cli import ScriptInfo  # the file commands run without flask

            ctx.obj = ScriptInfo(create_app=_create_app, set_debug_flag=False)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with the first sentence of its help, shortened as click does."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        with formatter.section("Commands"):
            formatter.write_dl([(name, _short_help(name, limit)) for name in names])


def _short_help(name: str, limit: int) -> str:
    return click.Command(name, help=COMMANDS[name].summary).get_short_help_str(limit)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """`meterfix --version`: the installed version, looked up only when asked for."""
    if value and not ctx.resilient_parsing:
        click.echo(f"meterfix {_meterfix_version()}")
        ctx.exit()


@click.group(cls=MeterfixGroup)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """meterfix: turn Stripe usage-import errors into fixed usage."""
    configure_logging(ROLES.get(ctx.invoked_subcommand or "", Role.CLI))
    _apply_log_settings()


def _apply_log_settings() -> None:
    """LOG_LEVEL and LOG_FORMAT for commands that build no app (an app applies them too).

    The settings are read only when the environment (`.env` included) names either: reading
    them imports pydantic (~30 MB, 0.1 s), which `meterfix remediate --rules R --meters M`
    otherwise never needs."""
    if not _names_log_settings():
        return  # the defaults (INFO, automatic format) are what `configure_logging` installed
    from pydantic import ValidationError

    from service.config import load_settings

    try:
        settings = load_settings()
    except ValidationError:  # the command that needs the settings says what is wrong
        return
    configure_logging(level=settings.log_level, log_format=settings.log_format)


_LOG_SETTINGS = ("log_level", "log_format")


def _names_log_settings() -> bool:
    """Whether LOG_LEVEL or LOG_FORMAT is set, in any case as the settings read them (`.env`
    files are in the environment by now: `MeterfixGroup.invoke` loads them first)."""
    return any(name.lower() in _LOG_SETTINGS for name in os.environ)
