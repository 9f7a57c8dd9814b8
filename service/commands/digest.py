"""`meterfix digest [--dry-run] [--since 24h] [--channel slack|email]`: the digest of the
window that ends now, sent at once (or, with --dry-run, printed in its plain-text form)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click
from flask.cli import with_appcontext
from sqlalchemy.exc import SQLAlchemyError

from service.adapters.channels import Channel, ChannelName
from service.commands._shown import shown
from service.config.values import parse_duration
from service.runtime import runtime

if TYPE_CHECKING:  # annotations only: notify is imported when the command runs, not for --help
    from service.notify.digest_lines import Digest
    from service.notify.digests import DigestOutcome, DigestSender
    from service.notify.windows import Window


@click.command("digest")
@click.option(
    "--dry-run", is_flag=True, help="print the plain-text digest; send and record nothing"
)
@click.option("--since", default="24h", show_default=True, help="window length: 15m, 6h, 1d…")
@click.option("--channel", type=click.Choice(["slack", "email"]), help="only this channel")
@with_appcontext
def digest_command(dry_run: bool, since: str, channel: str | None) -> None:
    """Send the digest of the last SINCE now (exit 1 with one line if a send failed)."""
    from service.models._types import utcnow

    length, sender = _length_and_sender(since, dry_run, channel)
    now = utcnow()
    window = _window(now, length, since)
    try:
        if dry_run:
            _show(sender.collect(window), since, now)
            return
        outcomes = sender.send_now(window)
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database unavailable: {type(exc).__name__}") from exc
    _tell_outcomes(outcomes)


def _length_and_sender(since: str, dry_run: bool, channel: str | None) -> tuple[int, DigestSender]:
    """The window's length (`--since`) and the sender on the channels asked for
    (ClickException: a bad --since or SMTP_URL, or no channel configured)."""
    from service.notify.digests import DigestSender

    rt = runtime()
    try:
        length = parse_duration(since)
        channels = [] if dry_run else _channels(channel)
        sender = DigestSender(rt.engine, rt.settings, channels, instance=_instance())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if length <= 0:  # `--since 0` said "nothing happened in the last 0"
        raise click.ClickException(f"--since {since}: the window must be longer than 0")
    if not dry_run and not channels:
        raise click.ClickException(
            "no channel configured: set SLACK_WEBHOOK_URL, or SMTP_URL and DIGEST_EMAIL_TO"
        )
    return length, sender


def _window(now: datetime, length: int, since: str) -> Window:
    """The `length` seconds that end `now` (ClickException: it would start before year 1)."""
    from service.notify.windows import Window

    try:
        return Window(now - timedelta(seconds=length), now)
    except OverflowError as exc:
        raise click.ClickException(
            f"--since {since}: the window would start before year 1"
        ) from exc


def _show(digest: Digest, since: str, now: datetime) -> None:
    """--dry-run: the digest's plain text, or a line saying nothing would be sent."""
    from service.notify.render import render_digest

    if digest.empty:
        click.echo(f"nothing happened in the last {since}: nothing would be sent")
        return
    click.echo(render_digest(digest, now=now).text, nl=False)


def _tell_outcomes(outcomes: Sequence[DigestOutcome]) -> None:
    """A line for each channel that did not fail; a ClickException naming those that did."""
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in outcomes:
        if outcome.status != "failed":
            click.echo(f"{outcome.channel}: {outcome.status}")
    if failed:
        raise click.ClickException(shown("; ".join(_failure(o.channel, o.reason) for o in failed)))


def _failure(channel: str, reason: str | None) -> str:
    """`slack failed: HTTP 400`: the channel named once (the adapters' reasons start with it)."""
    text = reason or "unknown reason"
    return f"{channel} failed: {text.removeprefix(f'{channel}: ')}"


def _channels(name: str | None) -> list[Channel]:
    """The configured channels, or only the one `--channel` names (ValueError: bad SMTP_URL)."""
    rt = runtime()
    if name is None:
        return rt.channels
    channel = rt.channel(ChannelName(name))
    return [channel] if channel is not None else []


def _instance() -> str:
    from service.worker.loop import new_worker_id

    return f"cli:{new_worker_id()}"


COMMANDS = [digest_command]
