"""Rows the bundled poller must neither lose nor bill twice when an import stops part-way:
Stripe refuses a request, the object changes under the poller, a byte cannot be read. The
sandbox over HTTP through the real SDK, a file:// bucket, SQLite and PostgreSQL."""

# ruff: noqa: F811  (fixtures imported from the module that defines them)
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlmodel import Session, select

from service.adapters.bucket import open_bucket
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.config import Settings
from service.models import Alert, BucketObject, ImportSet, PollerBatch
from service.poller.passes import run_poll_pass
from service.poller.retry import find_retry, reopen
from tests.conftest import SandboxServer
from tests.integration.test_poller_resume import (  # noqa: F401
    HEADER,
    STREAM,
    DyingSink,
    Killed,
    _object,
    _put,
    poller,
    settings,
)


def _one_worker(settings: Settings) -> StripeMeterEventSink:
    """One request at a time (two in flight): which batches go out before a refusal is known."""
    return StripeMeterEventSink(build_stripe_client(settings), settings, workers=1, base_delay=0.01)


def _accepted(server: SandboxServer) -> list[str]:
    return sorted(e["identifier"] for e in server.admin.meter_events())


def test_batches_a_refusal_kept_from_going_out_are_sent_from_the_fixed_file_a_day_later(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """Stripe refuses the first request (HTTP 400): the poller gives up on the file at once.
    The batches recorded with it that never went out (and the refused one) were never billed,
    so the fixed file uploaded a day later sends them: none is left out as "sent by another
    version" once the 23 h horizon has passed."""
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    stamp = int(day_ago.timestamp()) - 60
    rows = [f"u-{i},{stamp},api_requests,cus_A,{i + 1}\n" for i in range(450)]
    _put(settings, "usage.csv", rows, tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    first = run_poll_pass(poller(_one_worker(settings), at=day_ago))
    assert (first.retry_files, first.gave_up) == (1, 1)
    billed = set(_accepted(sandbox_server))
    assert len(billed) < 450  # the refused batch at least, and the ones never sent
    with Session(poller().engine) as session:
        recorded = session.exec(select(PollerBatch)).all()
    # only batches that went out (and were not refused) stay recorded as sent
    assert len(recorded) == len(billed) // 100
    assert all(b.acked_at is not None for b in recorded)
    _put(settings, "usage-fixed.csv", rows, tmp_path)
    second = run_poll_pass(poller(_one_worker(settings)))
    assert (second.imported, second.rows, second.sent) == (1, 450, 450)
    assert second.left_out == len(billed)
    assert _accepted(sandbox_server) == sorted(f"u-{i}" for i in range(450))
    assert not sandbox_server.admin.duplicates()
    assert _object(poller(), "usage-fixed.csv").status == "imported"


NO_ID_HEADER = "timestamp,event_name,payload_stripe_customer_id,payload_value\n"


def _recent(count: int, start: int = 0) -> list[str]:
    stamp = int(time.time()) - 60
    return [f"{stamp},api_requests,cus_A,{i + 1}\n" for i in range(start, start + count)]


class _OverwrittenAfterListing:
    """A real bucket whose object `key` is overwritten (a real upload) just after a listing
    returns it, as a customer's job may do between the poller's listing and its read."""

    def __init__(self, bucket: Any, key: str, content: str, tmp_path: Path) -> None:
        self.bucket, self.key, self.content, self.tmp_path = bucket, key, content, tmp_path
        self.done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bucket, name)

    def list_objects(self, prefix: str = "") -> Any:
        listed = list(self.bucket.list_objects(prefix))
        if not self.done:
            self.done = True
            source = self.tmp_path / "overwrite.tmp"
            source.write_text(self.content)
            self.bucket.upload(source, self.key, {})
        return iter(listed)


@pytest.mark.parametrize("where", ["file", "s3"])
def test_an_object_overwritten_after_it_was_listed_is_imported_once_as_its_new_version(
    where: str,
    settings: Settings,
    sandbox_server: SandboxServer,
    poller: Any,
    tmp_path: Path,
    s3_endpoint: str,
) -> None:
    """Rows without identifiers are named after the object version (key, ETag, row): the new
    bytes read under the old ETag and then imported again under the new one were billed
    twice. The version listed is gone: it is skipped, the new version imported once."""
    if where == "s3":
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
        update = {"bucket_url": "s3://usage/in", "s3_endpoint_url": s3_endpoint}
        settings = settings.model_copy(update=update)
    bucket = open_bucket(settings)
    key = f"{bucket.prefix}daily.csv"
    source = tmp_path / "first.tmp"
    source.write_text(NO_ID_HEADER + "".join(_recent(3)))
    bucket.upload(source, key, {})
    new_rows = _recent(5, start=100)
    deps = poller()
    deps.bucket = open_bucket(settings)
    deps.bucket = _OverwrittenAfterListing(
        deps.bucket, key, NO_ID_HEADER + "".join(new_rows), tmp_path
    )
    first = run_poll_pass(deps)
    assert (first.imported, first.skipped, first.sent) == (0, 1, 0)
    second = run_poll_pass(deps)
    assert (second.imported, second.sent) == (1, 5)
    values = sorted(int(e["payload"]["value"]) for e in sandbox_server.admin.meter_events())
    assert values == list(range(101, 106))  # the new version's rows, once each
    with Session(deps.engine) as session:
        versions = session.exec(select(BucketObject).where(BucketObject.key == key)).all()
    statuses = sorted((v.status, v.sent) for v in versions)
    assert statuses == [("imported", 5), ("skipped", 0)]
    gone = next(v for v in versions if v.status == "skipped")
    assert "no longer the version" in (gone.error or "")


def test_a_file_still_being_written_is_read_once_it_stops_changing(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A `file://` object read while its writer was mid-row: its last row `125` was read and
    billed as `12`, then the whole row left out as sent by another version."""
    stamp = int(time.time()) - 60
    root = Path(settings.bucket_url.removeprefix("file://"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "stream.csv"
    path.write_text(HEADER + f"w-1,{stamp},api_requests,cus_A,7\nw-2,{stamp},api_requests,cus_A,12")
    early = run_poll_pass(poller())
    assert (early.deferred, early.sent) == (1, 0)
    assert sandbox_server.admin.meter_events() == []
    with path.open("a") as out:
        out.write("5\n")  # the writer finishes its row
    later = run_poll_pass(poller())
    assert (later.imported, later.sent) == (1, 2)
    billed = {e["identifier"]: e["payload"]["value"] for e in sandbox_server.admin.meter_events()}
    assert billed == {"w-1": "7", "w-2": "125"}


def test_a_file_with_a_bad_byte_deep_inside_sends_nothing_and_says_where(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A byte that is not UTF-8 3 MB into a CSV: the rows before it (the blocks read before
    it) were billed, then the object was reported failed with none sent, and the valid
    rows after it were never sent. The file is checked end to end before any row goes out."""
    stamp = int(time.time()) - 60
    rows = [f"b-{i},{stamp},api_requests,cus_A,{i + 1}\n".encode() for i in range(100_000)]
    rows[80_000] = rows[80_000].replace(b"cus_A", b"cus_\xff")
    body = HEADER.encode() + b"".join(rows)
    source = tmp_path / "bad.tmp"
    source.write_bytes(body)
    open_bucket(settings).upload(source, "deep.csv", {})
    report = run_poll_pass(poller())
    assert (report.failed_files, report.sent) == (1, 0)
    assert sandbox_server.admin.meter_events() == []
    offset = body.index(b"\xff")
    assert report.errors == [f"deep.csv: not UTF-8 text: undecodable byte at offset {offset}"]
    obj = _object(poller(), "deep.csv")
    assert (obj.status, obj.sent) == ("failed", 0)
    with Session(poller().engine) as session:
        import_set = session.exec(select(ImportSet)).one()
    assert import_set.status == "failed" and "offset" in (import_set.failed_reason or "")


def test_a_json_array_unreadable_after_rows_were_sent_is_given_up_saying_what_was_sent(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """Item 1,501 of a JSON array is not JSON: the first 1,000 rows had gone out (read and
    sent a group at a time). The file was then handed to the whole-file repair as if nothing
    had been sent (which would send them again) and reported with none sent; now it is given
    up with a critical alert saying what was sent, and nothing is handed over."""
    stamp = int(time.time()) - 60
    items = [
        json.dumps(
            {
                "identifier": f"j-{i}",
                "timestamp": stamp,
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": "cus_A", "value": str(i + 1)},
            }
        )
        for i in range(2000)
    ]
    items[1500] = '{"identifier": "j-1500" "timestamp": 1}'
    source = tmp_path / "array.tmp"
    source.write_text("[\n" + ",\n".join(items) + "\n]\n")
    open_bucket(settings).upload(source, "array.json", {})
    report = run_poll_pass(poller())
    assert (report.retry_files, report.gave_up, report.failed_files) == (1, 1, 0)
    billed = _accepted(sandbox_server)
    assert billed == sorted(f"j-{i}" for i in range(1000))
    obj = _object(poller(), "array.json")
    assert obj.status == "failed" and "invalid JSON in item 1501" in (obj.error or "")
    with Session(poller().engine) as session:
        assert session.exec(select(ImportSet)).all() == []  # nothing handed to a repair
        alert = session.exec(select(Alert)).one()
    assert alert.severity == "critical"
    assert alert.subject == "array.json: cannot be read past a point; rows before it were sent"
    assert "Rows before row 1001 are billed" in alert.message


class _RecordingSink(StripeMeterEventSink):
    """The real sink, noting the identifiers of every request it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identifiers: list[str] = []

    def send_batch(self, batch: Any) -> int:
        self.identifiers.extend(str(event["identifier"]) for event in batch)
        return super().send_batch(batch)


def test_a_row_repeating_an_identifier_sent_before_is_not_sent_again_on_resume(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """Row 151 repeats row 5's identifier (Stripe deduped it on the first pass). A resume
    after the acknowledged prefix left out only the rows recorded as sent, one row per
    identifier: row 151 was sent again, more than a day later, when Stripe bills it."""
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    stamp = int(day_ago.timestamp()) - 60
    rows = [f"d-{i},{stamp},api_requests,cus_A,{i + 1}\n" for i in range(300)]
    rows[150] = f"d-4,{stamp},api_requests,cus_A,7\n"
    _put(settings, "dups.csv", rows, tmp_path)
    client = build_stripe_client(settings)
    dying = DyingSink(client, settings, workers=1, base_delay=0.01, die_at=3)
    with pytest.raises(Killed):  # batches 0 and 1 acknowledged, the poller killed sending 2
        run_poll_pass(poller(dying, at=day_ago))
    assert _object(poller(), "dups.csv").acked_batches == 2
    assert run_poll_pass(poller()).gave_up == 1  # batch 2 first sent over 23 h ago
    deps = poller(_RecordingSink(client, settings, workers=1, base_delay=0.01))
    reopen(deps.engine, find_retry(deps.engine, "dups.csv", "", deps.clock()), confirmed=True)
    report = run_poll_pass(deps)  # what `poll --retry dups.csv --yes` does
    assert (report.imported, report.rows, report.sent) == (1, 300, 300)
    assert sorted(deps.sink.identifiers) == sorted(f"d-{i}" for i in range(200, 300))


def test_a_refused_file_fixed_under_its_own_key_bills_each_row_without_identifier_once(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """What the give-up alert advises after a 400: the fixed file under the same key. Rows
    without an identifier are named after the key and their content, so the rows Stripe
    accepted before are left out and the others sent once."""
    rows = _recent(250)
    _put_raw(settings, "plain.csv", NO_ID_HEADER + "".join(rows), tmp_path)
    sandbox_server.admin.inject_fault("POST", STREAM, 400, count=1)
    first = run_poll_pass(poller(_one_worker(settings)))
    assert first.gave_up == 1
    with Session(poller().engine) as session:
        alert = session.exec(select(Alert)).one()
    assert "upload the fixed file under the same key" in alert.message
    accepted = len(sandbox_server.admin.meter_events())
    assert 0 < accepted < 250
    _put_raw(settings, "plain.csv", NO_ID_HEADER + "".join(rows) + "\n", tmp_path)  # "fixed"
    second = run_poll_pass(poller(_one_worker(settings)))
    assert (second.imported, second.sent, second.left_out) == (1, 250, accepted)
    values = sorted(int(e["payload"]["value"]) for e in sandbox_server.admin.meter_events())
    assert values == list(range(1, 251))  # each row billed once


def _put_raw(settings: Settings, key: str, text: str, tmp_path: Path) -> None:
    source = tmp_path / "raw.tmp"
    source.write_text(text)
    open_bucket(settings).upload(source, key, {})


def test_a_file_whose_key_no_record_holds_is_named_and_the_others_imported(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A `file://` path past the 1,024 characters of `bucket_objects.key` (S3 keys never are)
    failed every pass on PostgreSQL at its record: no object after it was imported."""
    root = Path(settings.bucket_url.removeprefix("file://"))
    deep = root.joinpath(*(["d" * 250] * 5))
    deep.mkdir(parents=True)
    stamp = int(time.time()) - 60
    (deep / "a.csv").write_text(HEADER + f"long-1,{stamp},api_requests,cus_A,3\n")
    _put(settings, "z.csv", [f"short-1,{stamp},api_requests,cus_A,4\n"], tmp_path)
    reports = [run_poll_pass(poller()) for _ in range(2)]  # the alert is counted, not twice
    assert [(r.listed, r.imported) for r in reports] == [(1, 1), (1, 0)]
    assert _accepted(sandbox_server) == ["short-1"]
    for report in reports:
        assert len(report.errors) == 1
        assert report.errors[0].endswith("…: key longer than 1024 characters (1260): not read")
    with Session(poller().engine) as session:
        alert = session.exec(select(Alert)).one()
        assert session.exec(select(BucketObject.key)).all() == ["z.csv"]
    assert (alert.kind, alert.severity) == ("poller.key_too_long", "warning")
    # moved to a shorter path: imported, and the alert (never resolved before) is resolved
    (deep / "a.csv").rename(root / "a.csv")
    assert run_poll_pass(poller()).imported == 1
    assert sorted(_accepted(sandbox_server)) == ["long-1", "short-1"]
    with Session(poller().engine) as session:
        assert session.exec(select(Alert.status)).one() == "resolved"


def test_the_copy_of_an_object_is_removed_after_its_import_and_after_a_crash(
    settings: Settings, sandbox_server: SandboxServer, poller: Any, tmp_path: Path
) -> None:
    """A pass imports a local copy of the version it listed: none is left behind, not even
    by a pass killed mid-import (SIGKILL runs no cleanup: the next pass clears its copy)."""
    stamp = int(time.time()) - 60
    _put(
        settings,
        "kept.csv",
        [f"k-{i},{stamp},api_requests,cus_A,1\n" for i in range(300)],
        tmp_path,
    )
    copies = tmp_path / "work" / "objects"
    dying = DyingSink(build_stripe_client(settings), settings, workers=1, base_delay=0.01, die_at=2)
    with pytest.raises(Killed):
        run_poll_pass(poller(dying))
    assert list(copies.iterdir()) == []  # removed on the way out
    copies.joinpath("object-0123456789abcdef01234567.csv").write_text("left by a killed pass")
    report = run_poll_pass(poller())
    assert (report.imported, report.sent) == (1, 300)
    assert list(copies.iterdir()) == []
