"""`meterfix poll [--once] [--retry KEY [--yes]]`: the bundled poller (index mode when
MFX_POLLER=index)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from remediation.ports import ObjectInfo
from service.commands._shown import shown, shown_in_markup
from service.commands._signals import stop_on_signals
from service.config import PollerMode
from service.config.diagnostics import missing_api_key
from service.db.schema import check_schema
from service.errors import BucketError, SchemaNotCurrent
from service.poller.job import beat_exited, poll_forever
from service.poller.lock import poller_lock
from service.poller.passes import PassReport, PollerDeps, Progress, build_poller_deps, run_poll_pass
from service.poller.retry import RETRIED, describe, describe_earlier, find_retry, reopen
from service.runtime import runtime


@click.command("poll")
@click.option("--once", is_flag=True, help="one pass, then exit (0 even if some files failed)")
@click.option(
    "--retry",
    "retry_key",
    metavar="KEY",
    help="import this bucket object again now (given up or backing off); says first what it "
    "re-sends; resolves its alert on success",
)
@click.option(
    "--yes",
    is_flag=True,
    help="with --retry: re-send batches first sent more than 23 h ago (Stripe may no longer "
    "dedupe them)",
)
@with_appcontext
def poll_command(once: bool, retry_key: str | None, yes: bool) -> None:
    """Import new usage files from the bucket into Stripe (or only index them)."""
    rt = runtime()
    problem = missing_api_key(rt.settings)
    if problem and rt.settings.mfx_poller != PollerMode.INDEX:  # index mode calls no Stripe
        raise click.ClickException(problem)
    try:
        deps = build_poller_deps(rt)
        check_schema(rt.engine)  # a database never migrated was "unavailable: OperationalError"
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    except SchemaNotCurrent as exc:
        raise click.ClickException(f"{exc}: run `meterfix db upgrade` first") from exc
    except Exception as exc:  # bad BUCKET_URL and the like: one clear line
        raise click.ClickException(shown(f"cannot poll: {exc}")) from exc
    if retry_key is not None:
        _retry(deps, retry_key, confirmed=yes)
        return
    if yes:
        raise click.UsageError("--yes goes with --retry KEY")
    if once:
        _echo(_one_pass(deps))
        return
    stop = stop_on_signals()
    poll_forever(deps, stop, rt.settings.mfx_poll_interval, on_report=_echo)


def _one_pass(deps: PollerDeps, *, locked: bool = False) -> PassReport:
    """One pass, then the heartbeat says this poller exited (`beat_exited`)."""
    report: PassReport | None = None
    try:
        report = _run_one_pass(deps, locked=locked)
    finally:
        beat_exited(deps, report)
    return report


def _run_one_pass(deps: PollerDeps, *, locked: bool) -> PassReport:
    with _progress_bar() as progress:
        deps.progress = progress
        try:
            return run_poll_pass(deps, locked=locked)
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
        except BucketError as exc:  # says what could not be read and why
            raise click.ClickException(shown(f"poll failed: {exc}")) from exc
        except Exception as exc:  # the bucket cannot be listed: the pass could not run
            raise click.ClickException(shown(f"poll failed: {type(exc).__name__}: {exc}")) from exc


def _retry(deps: PollerDeps, key: str, *, confirmed: bool) -> None:
    """Say what a retry re-sends, ask for --yes past the 23 h horizon, then one pass over
    that object only; non-zero when it did not import. All of it under the poller lock: a
    pass of another poller may be sending the object's batches (their records must stay)."""
    with poller_lock(deps.engine) as acquired:
        if not acquired:
            raise click.ClickException(
                "another poller is running a pass: nothing sent, nothing changed; try again "
                "when it ends"
            )
        report = _retry_locked(deps, key, confirmed=confirmed)
    if report is None:
        return
    _echo(report)
    if not report.listed:
        raise click.ClickException(f"{shown(key)} left the bucket during the retry; see above")
    if report.imported + report.indexed == 0:
        raise click.ClickException(f"{shown(key)} was not imported; see above")


def _retry_locked(deps: PollerDeps, key: str, *, confirmed: bool) -> PassReport | None:
    plan = find_retry(deps.engine, key, deps.bucket.prefix, deps.clock())
    if plan is None:
        raise click.ClickException(f"the poller has no record of {shown(key)}")
    if plan.status not in RETRIED and not plan.stale_before:
        click.echo(f"{shown(plan.obj.key)} is {plan.status}: nothing to retry")
        return None
    if plan.status not in RETRIED:
        # imported, but earlier versions' stale batches hold rows another file holds too
        # (its alert names this key): the operator decides on them here
        for line in [describe(plan)[0], *describe_earlier(plan)]:
            click.echo(shown(line))
        if not confirmed:
            raise click.ClickException("nothing changed: pass --yes to count them as never sent")
        reopen(deps.engine, plan, confirmed=True)
        click.echo(f"{shown(plan.obj.key)} is {plan.status}: nothing of it is sent again")
        return None
    _check_still_listed(deps, plan.obj)
    for line in describe(plan):
        click.echo(shown(line))
    if plan.needs_yes and not confirmed:
        raise click.ClickException("nothing sent: pass --yes to re-send those batches")
    reopen(deps.engine, plan, confirmed=confirmed)
    deps.only = {(plan.obj.key, plan.obj.etag)}
    return _one_pass(deps, locked=True)


def _check_still_listed(deps: PollerDeps, obj: ObjectInfo) -> None:
    """A version the bucket no longer holds cannot be sent: nothing of its records changes
    (they are how other versions know which of its rows went out)."""
    try:
        current = deps.bucket.head(obj.key)
    except Exception as exc:  # the bucket cannot be read: one clear line
        raise click.ClickException(shown(f"cannot read {obj.key} in the bucket: {exc}")) from exc
    if current is not None and current.etag == obj.etag:
        return
    now = f"; it now holds ETag {current.etag}, which a pass takes" if current else ""
    raise click.ClickException(
        shown(f"{obj.key} (ETag {obj.etag}) is no longer in the bucket{now}: nothing sent")
    )


@contextmanager
def _progress_bar() -> Iterator[Progress | None]:
    """A rich progress bar over the files of the pass, on a terminal only; a key is its
    description as text (`shown_in_markup`), never markup."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress as RichProgress

    with RichProgress(transient=True) as bar:
        task: list[Any] = []

        def advance(done: int, total: int, key: str) -> None:
            if not task:
                task.append(bar.add_task("polling", total=total))
            bar.update(task[0], completed=done, description=shown_in_markup(key[-40:]))

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
        + (f", {report.left_out} of them left out: sent before" if report.left_out else "")
        + (f", {report.gave_up} given up" if report.gave_up else "")
        + (f", {report.waiting} backing off" if report.waiting else "")
        + (
            f", {report.reports_matched} error reports that came before their rows were "
            "recorded queued for remediation"
            if report.reports_matched
            else ""
        )
    )
    for error in report.errors:  # a key's control characters as code points: one line each
        click.echo(f"failed: {shown(error)}")


COMMANDS = [poll_command]
