"""`meterfix poll [--once]`: the bundled poller (index mode when MFX_POLLER=index)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.commands._signals import stop_on_signals
from service.poller import PassReport, PollerDeps, Progress, build_poller_deps, run_poll_pass
from service.poller_job import poll_forever


@click.command("poll")
@click.option("--once", is_flag=True, help="one pass, then exit (0 even if some files failed)")
@with_appcontext
def poll_command(once: bool) -> None:
    """Import new usage files from the bucket into Stripe (or only index them)."""
    from service.app import runtime  # service.app imports this module: import at call time

    rt = runtime()
    try:
        deps = build_poller_deps(rt)
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    except Exception as exc:  # bad BUCKET_URL and the like: one clear line
        raise click.ClickException(f"cannot poll: {exc}") from exc
    if once:
        _echo(_one_pass(deps))
        return
    stop = stop_on_signals()
    poll_forever(deps, stop, rt.settings.mfx_poll_interval, on_report=_echo)


def _one_pass(deps: PollerDeps) -> PassReport:
    with _progress_bar() as progress:
        deps.progress = progress
        try:
            return run_poll_pass(deps)
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
        except Exception as exc:  # the bucket cannot be listed: the pass could not run
            raise click.ClickException(f"poll failed: {type(exc).__name__}: {exc}") from exc


@contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A rich progress bar over the files of the pass, on a terminal only."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=True) as bar:
        task: list[Any] = []

        def advance(done: int, total: int, key: str) -> None:
            if not task:
                task.append(bar.add_task("polling", total=total))
            bar.update(task[0], completed=done, description=key[-40:])

        yield advance


def _echo(report: PassReport) -> None:
    if not report.ran:
        click.echo("skipped: another instance holds the poller lock")
        return
    files = report.imported if report.mode == "import" else report.indexed
    click.echo(
        f"{report.mode}: {files} files, {report.rows} rows, {report.sent} sent, "
        f"{report.failed_rows} failed rows, {report.failed_files} unreadable, "
        f"{report.retry_files} to retry, {report.skipped} skipped, {report.deferred} deferred"
    )
    for error in report.errors:
        click.echo(f"failed: {error}")


COMMANDS = [poll_command]
