"""`meterfix serve`, `meterfix worker [--once]`, `meterfix replay EVENT_ID`."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import threading
from datetime import timedelta
from functools import partial

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from remediation.errors import MeterfixError
from service.commands._shown import shown
from service.commands._signals import stop_on_signals
from service.config import Settings
from service.config.diagnostics import missing_api_key
from service.db.schema import check_schema
from service.errors import SchemaNotCurrent
from service.logs import log_event
from service.models.health import ProcessRole
from service.notify.schedule import start_notify_jobs
from service.notify.windows import DigestSchedule
from service.poller.job import start_poller_job
from service.runtime import Runtime, runtime
from service.web.access import login_banner
from service.worker.drain_loop import LoopEnd, run_loop
from service.worker.heartbeats import Ended, beat_ended, new_instance_id
from service.worker.inbox import replay
from service.worker.leftovers import sweep_leftovers
from service.worker.liveness import item_threads_alive
from service.worker.loop import InboxWorker, PassReport
from service.worker.silence import start_silence_watch
from service.worker.supervisor import (
    RESTART_EXIT_CODE,
    die_with_supervisor,
    is_supervised,
    supervise,
)


@click.command("serve")
@click.option(
    "--port", default=4242, show_default=True, type=click.IntRange(1, 65535), help="TCP port"
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@with_appcontext
def serve_command(port: int, host: str) -> None:
    """Run the web app with werkzeug (production runs gunicorn, see the Procfile)."""
    from werkzeug.serving import make_server

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if problem := missing_api_key(runtime().settings):  # webhooks are stored all the same
        log_event("config.no_api_key", level=logging.ERROR, message=problem)
    listening = _listen(host, port)  # before the dashboard's address is announced
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    _announce_dashboard(runtime().settings, f"http://{local}:{port}")  # terminal, not a log
    with listening:  # werkzeug serves on a copy of it
        server = make_server(host, port, app, threaded=True, fd=listening.fileno())
    server.log_startup()
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on `host`:`port`, or one line saying why not (werkzeug, binding it,
    printed two, "Address already in use" then its own advice, and exited 1)."""
    from werkzeug.serving import LISTEN_QUEUE, get_sockaddr, select_address_family

    family = select_address_family(host, port)
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug's
        listening.bind(get_sockaddr(host, port, family))
        listening.listen(LISTEN_QUEUE)
    except OSError as exc:
        listening.close()
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += " (another program holds that port: stop it, or start the server with "
            reason += "another --port)"
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None
    return listening


def _sweep_bucket(rt: Runtime) -> None:
    """A `file://` bucket's temp files of writes a killed worker never finished (S3 keeps no
    such thing: an upload not completed is no object)."""
    from service.adapters.file_bucket import FileBucket

    try:
        bucket = rt.bucket
    except Exception:  # a bucket that does not open fails the first task instead
        return
    if isinstance(bucket, FileBucket):
        removed = bucket.sweep_temporaries(2 * rt.settings.mfx_task_time_limit)
        if removed:
            log_event("worker.bucket_temporaries_removed", files=removed)


@click.command("worker")
@click.option("--once", is_flag=True, help="process what is due now, then exit")
@with_appcontext
def worker_command(once: bool) -> None:
    """Process the inbox and remediation tasks (and run the poller when MFX_POLLER is set)."""
    rt = runtime()
    _check_notify_settings(rt)
    if problem := missing_api_key(rt.settings):  # every event and task calls Stripe
        raise click.ClickException(problem)
    worker = InboxWorker(rt.engine, rt.settings, hard_time_limit=True)
    try:
        worker.check_database()
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    except SchemaNotCurrent as exc:
        raise click.ClickException(f"{exc}: run `meterfix db upgrade` first") from exc
    try:  # read now: a poller thread that failed on them died unseen, never beating
        rt.rules  # noqa: B018
    except (OSError, MeterfixError) as exc:
        raise click.ClickException(
            shown(f"cannot read the rules ({rt.rules_path}): {exc}")
        ) from exc
    # a killed worker's downloads and outputs: past twice an item's time limit, no live one's
    sweep_leftovers(2 * rt.settings.mfx_task_time_limit)
    _sweep_bucket(rt)
    if once:
        _run_once(worker)
        if item_threads_alive():  # an item overran its time limit: do not wait for it
            _exit_worker_process(0)
        return
    if not is_supervised():  # this process supervises; the worker runs in a child
        sys.exit(supervise(stop_on_signals()))
    die_with_supervisor()
    code = 0
    start_jobs = partial(start_scheduled_jobs, rt)
    if run_loop(worker, stop_on_signals(), start_jobs) is LoopEnd.RESTART:
        why = "an item's thread left running (past its time limit, or its lease lost)"
        log_event("worker.restarting", level=logging.WARNING, reason=why)
        code = RESTART_EXIT_CODE  # the supervisor starts a fresh worker process at once
    rt.close()
    _exit_worker_process(code)


def _check_notify_settings(rt: Runtime) -> None:
    """DIGEST_EVERY and SMTP_URL, read as the notify jobs read them, before anything runs: in
    the notify thread a bad one was only logged, and the worker ran on with no digest, no
    critical alert and no retention purge."""
    try:
        DigestSchedule(rt.settings.digest_every, rt.settings.digest_tz)
        rt.channels  # noqa: B018
    except ValueError as exc:  # the message names the setting, never the SMTP password
        raise click.ClickException(f"bad configuration: {exc}") from exc


def _exit_worker_process(code: int) -> None:
    """Exit; without the interpreter's clean-up while an abandoned item's thread still runs
    (exit hooks, an executor's for one, could wait for that thread forever)."""
    if not item_threads_alive():
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_once(worker: InboxWorker) -> None:
    """One drain; Ctrl-C or SIGTERM mid-item hands the item back (as `meterfix worker` does),
    never leaving it locked by a process that is gone, its attempt spent. The last heartbeat
    says the worker exited (or stopped, on a signal), as `poll --once` does (`beat_ended`)."""
    stop = stop_on_signals()
    try:
        report = worker.drain(stop)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    finally:
        ended = Ended.STOPPED if stop.is_set() else Ended.EXITED
        beat_ended(worker.engine, worker.worker_id, ProcessRole.WORKER, ended)
    _echo_report(report)


def _echo_report(report: PassReport) -> None:
    click.echo(
        f"processed {len(report.done)}, ignored {len(report.ignored)}, "
        f"retrying {len(report.retrying)}, dead {len(report.dead)}"
    )
    for event_id, error in report.retrying:
        click.echo(shown(f"failed (will retry): {event_id}: {error}"))
    for event_id, error in report.dead:
        click.echo(shown(f"dead-lettered: {event_id}: {error}"))
    for event_id in report.interrupted:
        click.echo(f"interrupted (handed back): {shown(event_id)}")
    for event_id in report.given_up:
        click.echo(f"given up (its lease lost, another worker has it): {shown(event_id)}")
    if report.abandoned:
        click.echo(
            "stopped early: an item's thread was left running (past its time limit, or its "
            "lease lost); the rest waits for a pass"
        )


@click.command("replay")
@click.argument("event_id")
@with_appcontext
def replay_command(event_id: str) -> None:
    """Re-queue a stored event, whatever its state. Refused while a live worker processes it
    (its lease not expired): a second worker would take it beside the first."""
    rt = runtime()
    lease = rt.settings.mfx_worker_lease
    try:
        check_schema(rt.engine)
        outcome = replay(rt.engine, event_id, timedelta(seconds=lease))
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    except SchemaNotCurrent as exc:
        raise click.ClickException(f"{exc}: run `meterfix db upgrade` first") from exc
    if not outcome.found:
        raise click.ClickException(f"unknown event: {shown(event_id)} is not in the inbox")
    if outcome.held_by is not None:
        raise click.ClickException(
            f"{shown(event_id)} is being processed by worker {outcome.held_by}: not re-queued "
            f"(replay it once that worker has finished; a worker that died lets go of it "
            f"{lease} s after its last heartbeat)"
        )
    click.echo(f"{shown(event_id)} re-queued")


def start_scheduled_jobs(rt: Runtime, stop: threading.Event) -> list[threading.Thread]:
    """The scheduled jobs `meterfix worker` runs beside the inbox (bundled poller, digests
    and alerts, the heartbeat-silence watch).

    Each job is a thread that loops until `stop` is set; the worker joins them on shutdown.
    With several workers on PostgreSQL, a job first takes a leader advisory lock
    (docs/architecture.md, "Scale"): the poller and the notify jobs per pass.
    """
    settings = rt.settings
    poller = start_poller_job(settings, stop)
    notify = start_notify_jobs(settings, stop, new_instance_id())
    silence = start_silence_watch(rt.engine, settings, stop)
    return ([poller] if poller is not None else []) + notify + [silence]


COMMANDS: list[click.Command] = [serve_command, worker_command, replay_command]


def _announce_dashboard(settings: Settings, served_at: str) -> None:
    """Under the embedded defaults, print the dashboard login URL and the generated token to
    the terminal, once, when the web app starts serving (never in a log line)."""
    banner = login_banner(settings, served_at, show_token=sys.stderr.isatty())
    if banner is not None:
        click.echo(banner, err=True)
