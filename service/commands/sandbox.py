"""`meterfix sandbox` (run the bundled Stripe stand-in) and `meterfix trigger EVENT_TYPE`."""

from __future__ import annotations

from pathlib import Path

import click
import requests
from flask.cli import with_appcontext

from sandbox.app import create_sandbox_app
from sandbox.client import SandboxAdmin, SandboxAdminError
from sandbox.defaults import SANDBOX_PORT, sandbox_bases
from sandbox.persistence import DEFAULT_STATE_FILE, STATE_FILE_ENV, StateFileError, keep_state_in
from sandbox.runtime import Sandbox
from sandbox.seed import seed_demo
from sandbox.timers import start_timers
from sandbox.triggers import create_sample_event, resolve_event_type
from service.commands._shown import shown
from service.config import Settings
from service.runtime import runtime

DEFAULT_TARGET = "http://127.0.0.1:4242/webhooks"


def _settings() -> Settings:
    return runtime().settings


@click.command("sandbox")
@click.option(
    "--port",
    default=SANDBOX_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="TCP port",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option(
    "--webhook-url",
    default=None,
    help="Deliver flushed reports and import sets here  [default: none, the events are "
    f"kept in the sandbox; `make run` gives {DEFAULT_TARGET}]",
)
@click.option("--connector-interval", default=0.0, type=float, help="Poll BUCKET_URL every S s.")
@click.option(
    "--report-interval",
    default=10.0,
    type=float,
    show_default=True,
    help="Flush meter error reports (thin events) every S s.",
)
@click.option(
    "--seed/--no-seed",
    default=True,
    show_default=True,
    help="Create the demo meters and customers at start.",
)
@click.option(
    "--state-file",
    default=DEFAULT_STATE_FILE,
    show_default=True,
    envvar=STATE_FILE_ENV,
    help=f"Keep the sandbox's state here across restarts (env {STATE_FILE_ENV}; '' = memory).",
)
@with_appcontext
def sandbox_command(
    port: int,
    host: str,
    webhook_url: str | None,
    connector_interval: float,
    report_interval: float,
    seed: bool,
    state_file: str,
) -> None:
    """Run the local Stripe stand-in (keys from the settings, bucket from BUCKET_URL)."""
    from werkzeug.serving import run_simple

    settings = _settings()
    secrets = settings.stripe_webhook_secrets
    app = create_sandbox_app(
        api_key=settings.stripe_api_key,
        webhook_secret=secrets[0] if secrets else "",
        bucket_url=settings.bucket_url,
        s3_endpoint_url=settings.s3_endpoint_url or None,
        webhook_url=webhook_url,
    )
    if state_file:
        try:
            keep_state_in(app, Path(state_file))
        except StateFileError as exc:
            raise click.ClickException(str(exc)) from exc
    sandbox: Sandbox = app.extensions["sandbox"]
    if seed:
        seed_demo(sandbox.state)
        sandbox.persist()
    stop = start_timers(
        sandbox, report_interval=report_interval, connector_interval=connector_interval
    )
    _announce(f"http://{host}:{port}")
    try:
        run_simple(host, port, app, threaded=True)
    finally:
        stop.set()


def _announce(url: str) -> None:
    click.echo(f"sandbox listening on {url} (admin API under /_sandbox/)")
    click.echo(
        "Stripe's hosts, each answering 404 for the others' paths (the URL above serves all):"
    )
    bases = sandbox_bases(url)
    click.echo(f"  STRIPE_API_BASE={bases['api']}")
    click.echo(f"  STRIPE_FILES_BASE={bases['files']}")
    click.echo(f"  STRIPE_METER_EVENTS_BASE={bases['meter_events']}")


@click.command("trigger")
@click.argument("event_type")
@click.option(
    "--to", "target", default=DEFAULT_TARGET, show_default=True, help="the service's webhook URL"
)
@click.option("--sandbox", "sandbox_url", default=None, help="Default: STRIPE_API_BASE.")
@with_appcontext
def trigger_command(event_type: str, target: str, sandbox_url: str | None) -> None:
    """Create a sample event in the sandbox and deliver it signed to --to, like
    `stripe trigger`. EVENT_TYPE: v1.billing.meter.error_report_triggered,
    v1.billing.meter.no_meter_found, data_management.import_set.succeeded|failed (or a suffix)."""
    try:
        full_type = resolve_event_type(event_type)
    except ValueError as exc:  # it names the type given
        raise click.ClickException(shown(exc)) from exc
    base = sandbox_url or _settings().stripe_api_base
    admin = SandboxAdmin(base)
    try:
        event = create_sample_event(admin, full_type)
        result = admin.deliver(event["id"], target)
    except (requests.RequestException, SandboxAdminError) as exc:
        raise click.ClickException(f"sandbox unreachable at {base}: {type(exc).__name__}") from exc
    if result.get("status") == 0:
        raise click.ClickException(f"{event['id']}: service unreachable at {target}")
    click.echo(f"{event['id']} {full_type} -> {target}: HTTP {result['status']}")
    if result["status"] != 200:
        raise click.ClickException(
            shown(f"service answered {result['status']}: {result['body'][:200]}")
        )


COMMANDS = [sandbox_command, trigger_command]
