"""The bundled poller end to end: a real bucket (file:// and moto S3), the sandbox as Stripe
through the real SDK, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session, select

import sandbox.intake
from remediation.engine import remediate
from remediation.filetypes import FileFormat
from remediation.formats import read_records
from remediation.ports import Bucket, ObjectInfo
from remediation.rules import load_rules
from service.adapters.bucket import open_bucket
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.db import make_engine
from service.errors import HorizonPassed
from service.models import Alert, BucketObject, ImportedRow, ImportSet, PollerBatch
from service.models._types import as_utc
from service.poller.other_versions import OtherVersions
from service.poller.passes import PassReport, PollerDeps, poller_lock, run_poll_pass
from service.poller.progress import ProgressStore
from service.web.quarantine import CSV_COLUMNS
from tests.conftest import SandboxServer

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


def _rows(prefix: str, count: int, ts: int | None = None) -> str:
    ts = ts or int(time.time()) - 60
    return "".join(f"{prefix}-{i},{ts},api_requests,cus_A,{i + 1}\n" for i in range(count))


@pytest.fixture
def settings(
    sandbox_server: SandboxServer, make_settings: Callable[..., Settings], db_url: str
) -> Settings:
    sandbox_server.admin.create_meter("api_requests")
    return make_settings(
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=sandbox_server.bases["files"],
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
    )


class Harness:
    def __init__(self, settings: Settings, tmp_path: Path, sink: Any = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.bucket: Bucket = open_bucket(settings)
        client = build_stripe_client(settings)
        self.handed: list[tuple[ImportSet, Path]] = []
        self.deps = PollerDeps(
            engine=self.engine,
            settings=settings,
            bucket=self.bucket,
            meters=StripeMeterSource(client),
            sink=sink or StripeMeterEventSink(client, settings),
            work_dir=tmp_path / "work",
            on_failed_rows=lambda s, p: self.handed.append((s, p)),
        )

    def put(self, key: str, content: str, tmp_path: Path) -> None:
        src = tmp_path / "upload.tmp"
        src.write_text(content)
        self.bucket.upload(src, self.bucket.prefix + key, {})

    def objects(self) -> dict[str, BucketObject]:
        with Session(self.engine) as session:
            return {o.key: o for o in session.exec(select(BucketObject))}

    def imported(self) -> list[ImportedRow]:
        with Session(self.engine) as session:
            return list(session.exec(select(ImportedRow).order_by(ImportedRow.row_number)))


@pytest.fixture
def harness(settings: Settings, tmp_path: Path) -> Harness:
    h = Harness(settings, tmp_path)
    yield h  # type: ignore[misc]
    h.engine.dispose()


def test_pass_imports_new_files_once(
    harness: Harness, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    harness.put("a.csv", HEADER + _rows("a", 150), tmp_path)
    harness.put(
        "b.jsonl",
        '{"identifier":"b-1","event_name":"api_requests",'
        '"payload":{"stripe_customer_id":"cus_A","value":3}}\n',
        tmp_path,
    )
    harness.put("a.csv.meta.json", "{}", tmp_path)  # a sidecar-looking object is never read
    harness.put("quarantine/q.csv", HEADER + _rows("q", 3), tmp_path)
    harness.put("notes.txt", "hello", tmp_path)
    report = run_poll_pass(harness.deps)
    assert (report.imported, report.rows, report.sent, report.failed_rows) == (2, 151, 151, 0)
    accepted = sandbox_server.admin.meter_events()
    assert sorted(e["identifier"] for e in accepted) == sorted(
        [f"a-{i}" for i in range(150)] + ["b-1"]
    )
    objects = harness.objects()
    assert set(objects) == {"a.csv", "b.jsonl"}
    assert objects["a.csv"].status == "imported" and objects["a.csv"].sent == 150
    rows = [r for r in harness.imported() if r.object_key == "a.csv"]
    assert [(r.identifier, r.row_number, r.sent) for r in rows[:2]] == [
        ("a-0", 1, True),
        ("a-1", 2, True),
    ]
    again = run_poll_pass(harness.deps)
    assert (again.imported, again.sent) == (0, 0)
    assert len(sandbox_server.admin.meter_events()) == 151


def test_objects_in_the_same_second_and_new_versions_are_taken(
    harness: Harness, tmp_path: Path
) -> None:
    harness.put("x1.csv", HEADER + _rows("x1", 1), tmp_path)
    run_poll_pass(harness.deps)
    harness.put("x2.csv", HEADER + _rows("x2", 1), tmp_path)  # same second as x1, likely
    harness.put("x1.csv", HEADER + _rows("x1-v2", 2), tmp_path)  # same key, new content
    report = run_poll_pass(harness.deps)
    assert (report.imported, report.sent) == (2, 3)


def test_failed_rows_go_to_a_failed_records_file_and_the_hook(
    harness: Harness, tmp_path: Path
) -> None:
    bad = "bad-1,{ts},no_such_meter,cus_A,1\nbad-2,{ts},api_requests,cus_A,abc\n".format(
        ts=int(time.time()) - 60
    )
    harness.put("mixed.csv", HEADER + _rows("ok", 3) + bad, tmp_path)
    report = run_poll_pass(harness.deps)
    assert (report.sent, report.failed_rows) == (3, 2)
    [(import_set, path)] = harness.handed
    assert import_set.import_set_id.startswith("impset_local_")
    assert (import_set.origin, import_set.status) == ("poller", "succeeded_with_errors")
    assert (import_set.errors_row_count, import_set.successes_row_count) == (2, 3)
    assert import_set.source_object == "mixed.csv"
    failed = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["identifier"], r["error_code"]) for r in failed] == [
        ("bad-1", "no_meter"),
        ("bad-2", "meter_event_invalid_value"),
    ]
    assert list(failed[0])[:5] == HEADER.strip().split(",")
    assert failed[1]["payload_value"] == "abc" and failed[1]["error_message"]
    with Session(harness.engine) as session:
        stored = session.exec(select(ImportSet)).one()
    assert stored.detail["failed_records_path"] == str(path)


@pytest.mark.parametrize("identified", [True, False])
def test_crash_mid_file_resends_without_double_billing(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path, identified: bool
) -> None:
    """A crash mid-file: the next pass resumes and re-sends the batches in flight under the
    same identifiers. Rows without identifiers (many alike: each named by its digest and
    which of the rows alike it is) are named on resume as on the first pass, the rows
    before the resumed batch counted too."""
    client = build_stripe_client(settings)

    class CrashingSink(StripeMeterEventSink):
        calls = 0

        def send_batch(self, batch: Any) -> int:
            CrashingSink.calls += 1
            if CrashingSink.calls == 3:
                raise ConnectionError("network went away")
            return super().send_batch(batch)

    crashing = Harness(settings, tmp_path, sink=CrashingSink(client, settings, workers=1))
    ts = int(time.time()) - 60
    alike = "".join(f",{ts},api_requests,cus_A,{i % 7 + 1}\n" for i in range(450))
    crashing.put("big.csv", HEADER + (_rows("big", 450) if identified else alike), tmp_path)
    first = run_poll_pass(crashing.deps)
    assert first.retry_files == 1 and "network went away" in first.errors[0]
    assert crashing.objects()["big.csv"].status == "seen"  # not marked imported
    partly = len(sandbox_server.admin.meter_events())
    assert 0 < partly < 450
    healthy = Harness(settings, tmp_path)
    assert run_poll_pass(healthy.deps).waiting == 1  # a failed object backs off
    healthy.deps.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    second = run_poll_pass(healthy.deps)
    assert (second.imported, second.sent) == (1, 450)
    accepted = sandbox_server.admin.meter_events()
    assert len(accepted) == 450  # re-sent batches deduplicated by identifier
    assert len({e["identifier"] for e in accepted}) == 450
    if not identified:
        assert sum(int(e["payload"]["value"]) for e in accepted) == sum(
            i % 7 + 1 for i in range(450)
        )
    assert healthy.objects()["big.csv"].status == "imported"
    assert len(healthy.imported()) == 450
    crashing.engine.dispose()
    healthy.engine.dispose()


def test_index_mode_records_identifiers_and_sends_nothing(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    index_settings = settings.model_copy(update={"mfx_poller": "index"})
    h = Harness(index_settings, tmp_path)
    h.deps.sink, h.deps.meters = None, None
    h.put("a.csv", HEADER + _rows("a", 5) + ",1,api_requests,cus_A,1\n", tmp_path)
    report = run_poll_pass(h.deps)
    assert (report.mode, report.indexed, report.rows, report.sent) == ("index", 1, 5, 0)
    assert sandbox_server.admin.meter_events() == []
    assert [r.identifier for r in h.imported()] == [f"a-{i}" for i in range(5)]
    assert h.objects()["a.csv"].status == "indexed"
    h.engine.dispose()


def test_unreadable_file_is_marked_failed(harness: Harness, tmp_path: Path) -> None:
    harness.put("broken.json", '[{"identifier": "x"', tmp_path)
    # ending mid-line, moments after it was written: still being written? not read yet
    waiting = run_poll_pass(harness.deps)
    assert (waiting.deferred, waiting.failed_files, waiting.sent) == (1, 0, 0)
    assert "ends mid-line: still being written?" in (harness.objects()["broken.json"].error or "")
    assert run_poll_pass(harness.deps).deferred == 0  # waits out the settle time
    # listed unchanged a minute later by the poller's clock: as it will stay
    harness.deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=60)
    report = run_poll_pass(harness.deps)
    assert report.failed_files == 1 and "invalid JSON" in report.errors[0]
    obj = harness.objects()["broken.json"]
    assert obj.status == "failed" and obj.error
    assert run_poll_pass(harness.deps).failed_files == 0  # not retried forever


def test_only_one_instance_polls(harness: Harness, tmp_path: Path) -> None:
    """README: one poller at a time, whatever runs it. On SQLite the lock was always granted
    ("SQLite means one process"), but `meterfix poll --retry KEY` or `meterfix poll` beside a
    `meterfix worker` polling on the same database file are two processes: two passes took
    the same object at once. There the lock is a file lock beside the database."""
    harness.put("a.csv", HEADER + _rows("a", 1), tmp_path)
    other = create_engine(harness.settings.database_url)
    with poller_lock(other) as held:
        assert held
        assert run_poll_pass(harness.deps).ran is False
    assert run_poll_pass(harness.deps).imported == 1
    other.dispose()


def test_poller_over_s3(
    settings: Settings, s3_endpoint: str, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="usage")
    s3 = settings.model_copy(update={"bucket_url": "s3://usage/in", "s3_endpoint_url": s3_endpoint})
    h = Harness(s3, tmp_path)
    h.put("2026/a.csv", HEADER + _rows("a", 120), tmp_path)
    h.put("quarantine/a.quarantine.csv", HEADER + _rows("q", 2), tmp_path)
    h.put("corrected/a.r1.csv", HEADER + _rows("c", 2), tmp_path)
    report = run_poll_pass(h.deps)
    assert (report.imported, report.sent) == (2, 122)
    assert set(h.objects()) == {"in/2026/a.csv", "in/corrected/a.r1.csv"}
    h.engine.dispose()


def test_cli_poll_once(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path, make_app: Any
) -> None:
    bucket = open_bucket(settings)
    src = tmp_path / "a.csv"
    src.write_text(HEADER + _rows("cli", 4))
    bucket.upload(src, "a.csv", {})
    app = make_app(settings)
    result = app.test_cli_runner().invoke(args=["poll", "--once"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "import: 1 files, 4 rows, 4 sent" in result.output
    assert len(sandbox_server.admin.meter_events()) == 4
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM imported_rows")).scalar() == 4
    engine.dispose()


def test_the_poller_validates_with_the_configured_field_limits(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path, make_app: Any
) -> None:
    """`[policy]` limits in MFX_RULES apply to the poller as to remediation: a row whose
    identifier is over the configured length is not sent (it goes to its failed records)."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\nmax_identifier_chars = 12\n")
    bucket = open_bucket(settings)
    src = tmp_path / "a.csv"
    ts = int(time.time()) - 60
    src.write_text(
        HEADER + f"short-1,{ts},api_requests,cus_A,1\nmuch-longer-id-2,{ts},api_requests,cus_A,2\n"
    )
    bucket.upload(src, "a.csv", {})
    configured = settings.model_copy(update={"mfx_rules": str(rules)})
    result = make_app(configured).test_cli_runner().invoke(args=["poll", "--once"])
    assert result.exit_code == 0, result.output
    assert [e["identifier"] for e in sandbox_server.admin.meter_events()] == ["short-1"]
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        failed = conn.execute(text("SELECT failed FROM bucket_objects WHERE key = 'a.csv'"))
        assert failed.scalar() == 1
    engine.dispose()


def test_the_poller_reads_and_names_rows_under_the_configured_limits(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path, make_app: Any
) -> None:
    """`[policy]` limits as `meterfix remediate` applies them: the poller read JSON at the
    default depth of 32 whatever `max_json_depth` said (a row nested 6 deep under a limit of
    5 was sent, `remediate` refused it), and checked the name it gives a row without an
    identifier (`mfx-…`, 39 characters) against a lowered `max_identifier_chars` (36, a
    UUID's length): every such row was refused for "identifier is 39 characters long", a
    field it never had, and never billed."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[policy]\nmax_json_depth = 5\nmax_identifier_chars = 36\n")
    bucket = open_bucket(settings)
    ts = int(time.time()) - 60

    def line(identifier: str | None, nested: str) -> str:
        named = "" if identifier is None else f'"identifier": "{identifier}", '
        return (
            f'{{{named}"timestamp": {ts}, "event_name": "api_requests", "payload": '
            f'{{"stripe_customer_id": "cus_A", "value": "1", "d": {nested}}}}}\n'
        )

    src = tmp_path / "a.jsonl"
    src.write_text(line("d4", "[[1]]") + line("d5", "[[[1]]]") + line("d6", "[[[[1]]]]"))
    bucket.upload(src, "a.jsonl", {})
    csv_src = tmp_path / "b.csv"
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    csv_src.write_text(HEADER + f",{ts},api_requests,cus_A,7\n{uuid},{ts},api_requests,cus_A,2\n")
    bucket.upload(csv_src, "b.csv", {})
    configured = settings.model_copy(update={"mfx_rules": str(rules)})
    result = make_app(configured).test_cli_runner().invoke(args=["poll", "--once"])
    assert result.exit_code == 0, result.output
    events = sandbox_server.admin.meter_events()
    sent = sorted(str(e["identifier"]) for e in events)
    assert [i for i in sent if not i.startswith("mfx-")] == sorted(["d4", "d5", uuid])
    named = [e for e in events if str(e["identifier"]).startswith("mfx-")]
    assert [e["payload"]["value"] for e in named] == ["7"]  # the row without an identifier
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        failed = dict(conn.execute(text("SELECT key, failed FROM bucket_objects")).all())
    engine.dispose()
    assert failed == {"a.jsonl": 1, "b.csv": 0}


def test_cli_poll_fails_clearly_on_a_bad_bucket(
    make_settings: Callable[..., Settings], make_app: Any
) -> None:
    # the settings refuse it (test_settings_edges.py); a bucket failing to open is one line too
    app = make_app(make_settings().model_copy(update={"bucket_url": "ftp://nowhere"}))
    result = app.test_cli_runner().invoke(args=["poll", "--once"])
    assert result.exit_code != 0
    assert "cannot poll" in result.output and "Traceback" not in result.output


def test_a_file_that_keeps_failing_backs_off_then_is_given_up_with_an_alert(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """Each failing pass pushes the next attempt out (30 s, doubling); the poller gives up
    only once the failures have lasted MFX_POLLER_GIVE_UP_AFTER, with a critical alert."""
    limited = settings.model_copy(update={"mfx_poller_give_up_after": 3600})
    client = build_stripe_client(limited)
    quick = StripeMeterEventSink(client, limited, max_attempts=2, base_delay=0.01)
    harness = Harness(limited, tmp_path, sink=quick)
    start = datetime.now(UTC)
    harness.put("stuck.csv", HEADER + _rows("stuck", 3), tmp_path)
    sandbox_server.admin.inject_fault("POST", "/v2/billing/meter_event_stream", 500, count=-1)

    def at(seconds: float) -> PassReport:
        harness.deps.clock = lambda: start + timedelta(seconds=seconds)
        return run_poll_pass(harness.deps)

    assert (at(0).retry_files, at(10).waiting, at(40).retry_files) == (1, 1, 1)
    stuck = harness.objects()["stuck.csv"]
    assert (stuck.status, stuck.attempts) == ("seen", 2)
    assert "HTTP 500" in (stuck.error or "") and "after 2 attempts" in (stuck.error or "")
    assert as_utc(stuck.failing_since) == start
    next_at = as_utc(stuck.next_attempt_at)
    assert next_at and start + timedelta(seconds=55) <= next_at <= start + timedelta(seconds=100)
    final = at(3700)
    assert (final.retry_files, final.gave_up) == (1, 1)
    assert harness.objects()["stuck.csv"].status == "failed"
    assert at(99_999).listed == 1 and harness.objects()["stuck.csv"].attempts == 3
    with Session(harness.engine) as session:
        alert = session.exec(select(Alert)).one()
    assert alert.severity == "critical" and "stuck.csv" in alert.subject
    assert "meterfix poll --retry stuck.csv" in alert.message
    assert sandbox_server.admin.meter_events() == []
    harness.engine.dispose()


def test_a_file_rewritten_a_day_later_sends_only_its_new_rows(
    harness: Harness,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The day's file rewritten with the rows so far, and a copy under another name: the rows
    another object version sent were sent again, and Stripe dedupes an identifier for 24
    hours only, so a day later it billed them twice. A row of them that fails validation now
    is not handed to remediation either (its correction would bill it once more)."""
    ts = int(time.time()) - 60
    harness.put("day.csv", HEADER + _rows("d", 3, ts), tmp_path)
    assert run_poll_pass(harness.deps).sent == 3
    later = 25 * 3600  # past Stripe's dedupe window: the sandbox would bill them again
    monkeypatch.setattr(sandbox.intake, "now", lambda: time.time() + later)
    harness.deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=later)
    in_ms = f"d-2,{ts * 1000},api_requests,cus_A,3\n"  # d-2 again, its timestamp now in ms
    rewritten = HEADER + _rows("d", 2, ts) + in_ms + _rows("e", 2, ts)
    harness.put("day.csv", rewritten, tmp_path)
    harness.put("copy.csv", HEADER + _rows("d", 1, ts), tmp_path)
    report = run_poll_pass(harness.deps)

    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["d-0", "d-1", "d-2", "e-0", "e-1"]  # each once
    assert sandbox_server.admin.duplicates() == []
    assert (report.imported, report.rows, report.failed_rows, report.left_out) == (2, 6, 0, 4)
    assert len(harness.handed) == 0  # no failed records: d-2 was billed a day ago
    with Session(harness.engine) as session:
        sets = {s.source_object: s for s in session.exec(select(ImportSet))}
    day = sets["day.csv"]
    assert day.detail is not None and day.detail["sent_by_other_versions"] == 3
    assert (day.rows_processed, day.successes_row_count, day.errors_row_count) == (5, 5, 0)
    assert sets["copy.csv"].detail == {
        "failed_records_path": None,
        "etag": harness.objects()["copy.csv"].etag,
        "sent_by_other_versions": 1,
    }


def test_rows_another_version_may_not_have_delivered_are_sent_within_the_horizon(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    """A version's batch that never got through (no acknowledgement) while the object was
    overwritten: its rows in the new version are sent, not left out as sent elsewhere (its
    own version is gone; within the horizon Stripe dedupes them if they did arrive)."""
    client = build_stripe_client(settings)

    class DownSink(StripeMeterEventSink):
        def send_batch(self, batch: Any) -> int:
            raise ConnectionError("network went away")

    down = Harness(settings, tmp_path, sink=DownSink(client, settings, workers=1))
    down.put("day.csv", HEADER + _rows("d", 3), tmp_path)
    assert run_poll_pass(down.deps).retry_files == 1
    assert sandbox_server.admin.meter_events() == []
    healthy = Harness(settings, tmp_path)
    healthy.put("day.csv", HEADER + _rows("d", 4), tmp_path)  # overwritten meanwhile
    report = run_poll_pass(healthy.deps)
    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["d-0", "d-1", "d-2", "d-3"]
    assert (report.imported, report.sent) == (1, 4)
    down.engine.dispose()
    healthy.engine.dispose()


def test_which_rows_of_other_versions_count_as_sent(db_url: str) -> None:
    """Acknowledged: left out. Not acknowledged within the horizon (maybe never delivered),
    or recorded as sent with no batch recorded (never sent), or of the version being
    imported: sent. Not acknowledged and first sent past the re-send horizon: neither (it
    was left out as delivered, and a version overwritten during an outage lost its rows):
    the import stops (HorizonPassed) for the operator's `poll --retry KEY [--yes]`."""
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session:
            old = BucketObject(key="day.csv", etag="v1", status="seen")
            session.add(old)
            session.flush()
            assert old.id is not None
            for number, first_row, sent_at, acked_at in (
                (0, 1, now - timedelta(hours=2), now - timedelta(hours=2)),
                (1, 101, now - timedelta(hours=1), None),
                (2, 201, now - timedelta(hours=24), None),
            ):
                session.add(
                    PollerBatch(
                        object_id=old.id,
                        batch_number=number,
                        first_row=first_row,
                        rows=100,
                        first_sent_at=sent_at,
                        acked_at=acked_at,
                    )
                )
            for identifier, key, etag, n in (
                ("acked", "day.csv", "v1", 5),
                ("in-flight", "day.csv", "v1", 150),
                ("stale", "day.csv", "v1", 300),
                ("unbatched", "day.csv", "v1", 301),
                ("mine", "day.csv", "v2", 7),
            ):
                session.add(
                    ImportedRow(
                        identifier=identifier,
                        object_key=key,
                        etag=etag,
                        row_number=n,
                        sent=True,
                    )
                )
            session.commit()
        current = ObjectInfo(key="day.csv", etag="v2", size=0, last_modified=now)
        others = OtherVersions(ProgressStore(engine), current, now)
        asked = ["acked", "in-flight", "unbatched", "mine", "new", "nul\x00"]
        assert others.sent(asked) == {"acked"}
        with pytest.raises(HorizonPassed) as stopped:
            others.sent([*asked, "stale"])
        assert str(stopped.value).startswith(
            "1 unacknowledged batches of an earlier version of it (ETag v1), which hold rows "
            "of this file, (100 rows) were first sent at "
        )
        assert stopped.value.retry_keys == ("day.csv",)
    finally:
        engine.dispose()


def test_index_mode_says_when_stripe_takes_rows_of_an_earlier_version_again(
    settings: Settings, tmp_path: Path
) -> None:
    """Stripe's S3 connector takes a rewritten file whole and dedupes an identifier for 24
    hours only: rows an earlier version held, uploaded more than a day before, are billed
    again. meterfix cannot stop it in index mode, so a warning alert says which rows and
    versions; a copy within the day (Stripe dedupes it) raises none."""
    h = Harness(settings.model_copy(update={"mfx_poller": "index"}), tmp_path)
    h.deps.sink, h.deps.meters = None, None
    h.put("day.csv", HEADER + _rows("d", 3), tmp_path)
    run_poll_pass(h.deps)
    first = h.objects()["day.csv"]
    with Session(h.engine) as session:  # the first version was uploaded 30 hours ago
        stored = session.get(BucketObject, first.id)
        assert stored is not None and stored.last_modified is not None
        stored.last_modified -= timedelta(hours=30)
        session.add(stored)
        session.commit()
    h.put("day.csv", HEADER + _rows("d", 5), tmp_path)  # rewritten with the day's rows so far
    run_poll_pass(h.deps)
    same_day = "".join(_rows("d", 5).splitlines(keepends=True)[3:])  # d-3, d-4
    h.put("copy.csv", HEADER + same_day, tmp_path)  # a copy within the day: deduped
    run_poll_pass(h.deps)

    with Session(h.engine) as session:
        alerts = session.exec(select(Alert).where(Alert.kind == "poller.taken_again")).all()
    [alert] = alerts
    assert h.objects()["copy.csv"].rows == 2
    second = h.objects()["day.csv"]
    assert alert.alert_key == f"poller.taken_again:day.csv:{second.etag}"
    assert (alert.severity, alert.rows) == ("warning", 3)
    assert alert.detail is not None
    assert sorted(alert.detail["identifiers"]) == ["d-0", "d-1", "d-2"]
    assert alert.detail["earlier"] == [{"key": "day.csv", "etag": first.etag}]
    assert "so it bills them again" in alert.message and "day.csv" in alert.subject
    assert (alert.detail["corrected"], alert.detail["corrected_identifiers"]) == (0, [])
    assert alert.links == {"objects": ["day.csv"]}
    h.engine.dispose()


def test_a_row_a_later_version_sent_is_not_sent_again_by_the_next(
    harness: Harness,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row that failed validation in the first version (never sent), fixed and sent by the
    second: it stayed recorded with the first, as not sent, so the third version, a day
    later, sent it again (billed twice)."""
    ts = int(time.time()) - 60
    fixed = f"x,{ts},api_requests,cus_A,9\n"
    harness.put("day.csv", HEADER + fixed.replace("api_requests", "no_such_meter"), tmp_path)
    assert run_poll_pass(harness.deps).failed_rows == 1
    for days, rows in ((1, 1), (2, 2)):  # rewritten a day later, and a day after that
        later = days * 25 * 3600
        monkeypatch.setattr(sandbox.intake, "now", lambda later=later: time.time() + later)
        harness.deps.clock = lambda later=later: datetime.now(UTC) + timedelta(seconds=later)
        harness.put("day.csv", HEADER + fixed + _rows("d", rows, ts), tmp_path)
        run_poll_pass(harness.deps)

    accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
    assert accepted == ["d-0", "d-1", "x"]  # each once
    [second] = [r for r in harness.imported() if r.identifier == "x"]
    assert second.sent and second.row_number == 1


@pytest.mark.parametrize("mode", ["import", "index"])
def test_rows_with_timestamps_past_64_bits_neither_crash_nor_stop_the_file(
    settings: Settings, sandbox_server: SandboxServer, tmp_path: Path, mode: str
) -> None:
    """A hostile row holds a timestamp of 20 digits (or 19 with a sign): no time at all, but
    digits. The poller records every row's timestamp and a digest of it as 64-bit integers:
    such a row crashed the file (OverflowError) and the other rows were never sent."""
    h = Harness(settings.model_copy(update={"mfx_poller": mode}), tmp_path)
    if mode == "index":
        h.deps.sink, h.deps.meters = None, None
    huge = [("h1", "9" * 20), ("h2", "-" + "9" * 19), ("h3", str(2**63))]
    body = "".join(f"{i},{ts},api_requests,cus_A,5\n" for i, ts in huge)
    h.put("a.csv", HEADER + body + _rows("ok", 3), tmp_path)
    report = run_poll_pass(h.deps)
    assert report.errors == [] and h.objects()["a.csv"].status == f"{mode}ed"
    rows = {r.identifier: r for r in h.imported()}
    assert sorted(rows) == ["h1", "h2", "h3", "ok-0", "ok-1", "ok-2"]
    if mode == "import":
        assert all(rows[i].timestamp is None for i, _ in huge)  # not a time we can hold
    else:  # index mode records the second a reason reads (ns by its size), in 64 bits
        stamps = [rows[i].timestamp for i, _ in huge]
        assert stamps == [99_999_999_999, -10_000_000_000, 9_223_372_036]
    assert len({r.content for r in rows.values()}) == 6
    if mode == "import":
        assert (report.sent, report.failed_rows) == (3, 3)
        accepted = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
        assert accepted == ["ok-0", "ok-1", "ok-2"]
    h.engine.dispose()


def test_a_file_without_identifiers_rewritten_a_day_later_sends_only_its_new_rows(
    harness: Harness,
    sandbox_server: SandboxServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The day's file, rows without identifiers (Stripe's format allows it), rewritten with the
    rows so far in another order: each row got an identifier made of the object's version, so
    every row of the new version was new to Stripe and billed again. A row is now named by
    what it holds (timestamp, event name, payload) and its place among the object's rows
    that hold the same: a third row alike is new usage and billed; a row without a
    timestamp is named per version, as before (Stripe gives it the time it arrives: one like
    it in a new version may be new usage)."""
    header = "timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    ts = int(time.time()) - 60
    same, other = f"{ts},api_requests,cus_A,1\n", f"{ts},api_requests,cus_B,2\n"
    timeless = ",api_requests,cus_D,4\n"
    harness.put("day.csv", header + same + other + same + timeless, tmp_path)
    assert run_poll_pass(harness.deps).sent == 4
    later = 25 * 3600  # past Stripe's dedupe window: the sandbox would bill them again
    monkeypatch.setattr(sandbox.intake, "now", lambda: time.time() + later)
    harness.deps.clock = lambda: datetime.now(UTC) + timedelta(seconds=later)
    new = f"{ts + 30},api_requests,cus_A,1\n"
    harness.put("day.csv", header + same + timeless + other + same + new + same, tmp_path)
    report = run_poll_pass(harness.deps)

    events = sandbox_server.admin.meter_events()
    billed = sorted((e["payload"]["stripe_customer_id"], e["timestamp"]) for e in events)
    assert [b for b in billed if b[0] != "cus_D"] == [
        ("cus_A", ts),
        ("cus_A", ts),
        ("cus_A", ts),  # the third alike: new usage
        ("cus_A", ts + 30),
        ("cus_B", ts),
    ]
    assert [b[0] for b in billed if b[0] == "cus_D"] == ["cus_D", "cus_D"]  # one a version
    assert sandbox_server.admin.duplicates() == []
    assert len({e["identifier"] for e in events}) == 7
    assert (report.rows, report.sent, report.failed_rows, report.left_out) == (6, 6, 0, 3)


def test_a_broken_row_the_poller_refused_is_quarantined_with_its_own_reason(
    harness: Harness, tmp_path: Path
) -> None:
    """A row with a cell past the header (`1,234` unquoted) and a JSON line holding NaN: the
    poller's failed-records file says why (the cell `234` is in that message, the row being
    written cut to its header), but the run over it quarantined both as "the row is past the
    field limits": an operator fixing the row from the quarantine file billed 1, not 1234."""
    ts = int(time.time()) - 60
    harness.put("ragged.csv", HEADER + f"r-1,{ts},api_requests,cus_A,1,234\n", tmp_path)
    nan = f'{{"identifier":"n-1","timestamp":{ts},"event_name":"api_requests",'
    nan += '"payload":{"stripe_customer_id":"cus_A","value":NaN}}\n'
    harness.put("nan.jsonl", nan, tmp_path)
    run_poll_pass(harness.deps)
    reasons = {}
    for import_set, path in harness.handed:
        fmt = FileFormat.CSV if path.suffix == ".csv" else FileFormat.JSONL
        with path.open("rb") as stream:
            result = remediate(
                read_records(stream, fmt),
                source=import_set.source_object or "",
                fmt=fmt,
                meters=list(harness.deps.meters.meters()),
                rules=load_rules(None),
                now=ts,
                out_dir=tmp_path / "out" / path.stem,
            )
        [quarantine] = result.summary["outputs"]["quarantine"]
        reasons[import_set.source_object] = Path(quarantine).read_text()
    assert 'fields past the header: [""234""]' in reasons["ragged.csv"]
    assert "NaN" in reasons["nan.jsonl"] and "past the field limits" not in reasons["nan.jsonl"]


def test_the_quarantine_export_uploaded_is_refused_whole_and_no_row_sent(
    harness: Harness, tmp_path: Path
) -> None:
    """`/api/quarantine.csv` uploaded to the bucket (the dashboard's download looks like the
    file to fix): its rows were read as usage, each quarantined again under a misleading
    reason (`no single aliased column for value key 'value'`, the payload being one JSON
    column), newer entries of rows the operator meant to fix. Refused whole, saying which file
    to fix instead; nothing sent, no row quarantined."""
    ts = int(time.time()) - 60
    payload = '"{""stripe_customer_id"": ""cus_A"", ""value"": ""5""}"'
    export = (
        ",".join(CSV_COLUMNS)
        + "\n"
        + f"7,2026-12-07T00:00:00,3,day.csv,2,no_meter,no_meter,no meter,api_requests,cus_A,"
        f"q-1,{ts},api_requests,{payload},{{}},,\n"
    )
    harness.put("quarantine.csv", export, tmp_path)
    report = run_poll_pass(harness.deps)
    assert (report.sent, report.failed_rows, report.failed_files) == (0, 0, 1)
    assert "meterfix's quarantine export (/api/quarantine.csv)" in report.errors[0]
    [(import_set, _path)] = harness.handed
    assert import_set.status == "failed"
    assert (import_set.failed_reason or "").startswith(
        "not a usage file: meterfix's quarantine export"
    )
