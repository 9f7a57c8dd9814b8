"""`meterfix demo`: drop a messy usage file into the configured bucket, as a producer would.

With `make run` (bundled poller on, bundled sandbox as Stripe) the file is imported within a
poll interval; its bad rows are corrected or quarantined and the corrected file is imported
on a later pass. The rows use the current time, so the file is valid today.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

import click
from flask.cli import with_appcontext

from service.errors import BucketError
from service.runtime import runtime

HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
DAY = 86_400


def messy_rows(now: int, tag: str) -> list[list[str]]:
    """Two good rows, one of each correctable mistake, two rows that must be quarantined."""
    rows = [
        (now - 3600, "api_requests", "cus_demo_alice", "5"),  # good
        ((now - 7200) * 1000, "api_requests", "cus_demo_alice", "3"),  # milliseconds
        (now - 600, "api_requests", "cus_demo_bob", "1,234"),  # thousands separator
        (now - 600, "API-Requests", "cus_demo_bob", "2"),  # event name case
        (now - 600, "api_requests", "acme-42", "4"),  # external id -> customer map
        (now - 600, "api_requests", "cus_demo_alice", "abc"),  # not a number: quarantine
        (now - 40 * DAY, "api_requests", "cus_demo_bob", "6"),  # too old: quarantine
        (now - 60, "api_requests", "cus_demo_bob", "7"),  # good
    ]
    return [
        [f"{tag}-{n}", str(ts), name, cus, value]
        for n, (ts, name, cus, value) in enumerate(rows, start=1)
    ]


@click.command("demo")
@click.option("--name", default=None, help="object name (default: demo-<unix time>.csv)")
@with_appcontext
def demo_command(name: str | None) -> None:
    """Write a messy usage file into BUCKET_URL for the poller (or Stripe) to import."""
    settings = runtime().settings
    now = int(time.time())
    name = name or f"demo-{now}.csv"
    if not name.strip("/") or name.startswith("/") or ".." in name.split("/"):
        raise click.ClickException(
            f"--name {name!r}: a key inside the bucket (no leading /, no ..)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.csv"  # the name is the bucket key (it may name a folder)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            writer.writerows(messy_rows(now, f"demo{now}"))
        try:
            bucket = runtime().bucket
            key = bucket.prefix + name
            bucket.upload(path, key, {})
        except (BucketError, OSError) as exc:
            raise click.ClickException(f"cannot write to {settings.bucket_url}: {exc}") from exc
    click.echo(
        f"wrote {key} (8 rows: 2 good, 4 correctable, 2 to quarantine) to {settings.bucket_url}"
    )
    click.echo(
        "the bundled poller imports it on its next pass; corrected files appear under "
        f"{settings.mfx_corrected_prefix}, the rest under {settings.mfx_quarantine_prefix}"
    )


COMMANDS: list[click.Command] = [demo_command]
