"""Import-set events (failed, succeeded) through webhooks, the inbox, the worker and their
runs: events out of order, files whose header needs finding or repairing, and the counts of a
whole-file repair held against what it wrote."""
# ruff: noqa: F811  (the fixture imported from the module that defines it)

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from sandbox.events import build_import_set_event
from service.models import Alert, ImportSet, QuarantinedRow, RemediationRun
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


def _bucket(svc: Service) -> Path:
    path = Path(svc.settings.bucket_url.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _corrected_ids(bucket: Path) -> list[str]:
    ids = []
    for path in sorted((bucket / "corrected").rglob("*.csv")):
        lines = path.read_text().splitlines()
        ids += [line.split(",")[0] for line in lines[1:]]
    return ids


@pytest.mark.parametrize("when", ["older", "same second", "no time"])
def test_an_older_failed_event_after_a_newer_succeeded_does_not_resend_billed_rows(
    service: Service, when: str
) -> None:
    """Stripe does not deliver in order. The import set succeeded with one failed row (s3);
    s1 and s2 were imported and billed. An older `failed` event for the same import set came
    after: the handler kept the newer state (the stale event is not applied), but queued the
    whole-file repair all the same, which re-sent s1 and s2 as s1-mfx1 and s2-mfx1 (billed
    twice). A `failed` of the same second, or with no `created` to read, was taken for the
    newer and did the same: only a `failed` known to be newer undoes a processed file."""
    now = int(time.time()) - 120
    bucket = _bucket(service)
    source = HEADER + "".join(f"s{i},{now},api_requests,cus_1,{i}\n" for i in (1, 2, 3))
    (bucket / "day.csv").write_text(source)
    stripe_copy = service.sandbox.admin.upload_file(source, "day.csv")
    failed_rows = HEADER.rstrip("\n") + ",error_code\n"
    failed_rows += f"s3,{now * 1000},api_requests,cus_1,3,timestamp_in_future\n"
    errors = service.sandbox.admin.upload_file(failed_rows, "failed_records.csv")
    base = {
        "id": "impset_order",
        "object": "data_management.import_set",
        "file": stripe_copy["id"],
        "source_object": "day.csv",
    }
    succeeded = {
        **base,
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": errors["id"], "row_count": 1}, "successes": {"row_count": 2}},
    }
    failed = {**base, "status": "failed", "failed_reason": "Unparseable file"}
    service.deliver(build_import_set_event("succeeded", succeeded, created=now + 60))
    service.drain()
    stale = build_import_set_event("failed", failed, created=now + 30)  # older
    if when == "same second":
        stale["created"] = now + 60
    elif when == "no time":
        stale["created"] = "unknown"  # no time to read
    service.deliver(stale)
    service.drain()

    [impset] = service.rows(ImportSet)
    assert impset.status == "succeeded_with_errors"  # the newer state is kept
    assert _corrected_ids(bucket) == ["s3-mfx1"]
    assert [run.trigger for run in service.rows(RemediationRun)] == ["import_set.succeeded"]


def _failed_file(service: Service, impset: str, content: str, name: str, **extra: object) -> None:
    stripe_copy = service.sandbox.admin.upload_file(content, name)
    body = {
        "id": impset,
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "Unparseable file",
        "file": stripe_copy["id"],
        **extra,
    }
    service.deliver(build_import_set_event("failed", body))
    service.drain()


def _csv_rows(paths: list[Path]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in paths:
        with path.open(newline="") as handle:
            rows += list(csv.DictReader(handle))
    return rows


def _read_corrected(bucket: Path, impset: str) -> list[dict[str, str]]:
    return _csv_rows(sorted((bucket / "corrected" / impset).glob("*.csv")))


def test_a_failed_file_with_a_header_longer_than_1kb_has_its_aliases_repaired(
    service: Service,
) -> None:
    """A `;` file (failed whole) whose header has many columns (over 1 KB), its customer and
    value under aliases (`customer_id`, `value`) past the first KB. The repair read the header
    from the first 1 KB only: the repaired header was cut, and with it the alias renames
    (every row quarantined, "no single aliased column for value key 'value'")."""
    now = int(time.time()) - 60
    extras = [f"note_{i:03d}_" + "x" * 40 for i in range(25)]
    header = ["identifier", "timestamp", "event_name", *extras, "customer_id", "value"]
    lines = [";".join(header)]
    for i in range(3):
        lines.append(
            ";".join([f"w{i}", str(now), "api_requests", *["n"] * 25, "cus_1", str(i + 5)])
        )
    _failed_file(service, "impset_wide", "\n".join(lines) + "\n", "wide.csv")
    [run] = service.rows(RemediationRun)
    rows = _read_corrected(_bucket(service), "impset_wide")
    assert [
        (r["identifier"], r.get("payload_stripe_customer_id"), r.get("payload_value")) for r in rows
    ] == [("w0-mfx1", "cus_1", "5"), ("w1-mfx1", "cus_1", "6"), ("w2-mfx1", "cus_1", "7")], [
        (q.code, q.reason) for q in service.rows(QuarantinedRow)
    ]
    assert (run.input_rows, run.quarantined) == (3, 0)


def test_a_failed_file_starting_with_blank_lines_loses_no_usage(service: Service) -> None:
    """Stripe failed a CSV whose first lines are blank (no header where it looks for one). The
    repair found the header past them; the reader took the blank line for the header: the
    header line became a row, and every row was quarantined `malformed_row` ("row has 5
    fields, header has 0") with its cells dropped, no identifier, customer or value kept."""
    now = int(time.time()) - 60
    content = "\n  \n" + HEADER + f"b1,{now},api_requests,cus_1,5\nb2,{now},api_requests,cus_1,7\n"
    _failed_file(service, "impset_blank", content, "blank.csv")
    [run] = service.rows(RemediationRun)
    rows = _read_corrected(_bucket(service), "impset_blank")
    assert [(r["identifier"], r["payload_value"]) for r in rows] == [
        ("b1-mfx1", "5"),
        ("b2-mfx1", "7"),
    ], [(q.code, q.reason) for q in service.rows(QuarantinedRow)]
    assert (run.input_rows, run.quarantined) == (2, 0)  # the header line is no usage row


def test_conservation_of_a_failed_file_in_the_database_and_the_bucket(service: Service) -> None:
    """A whole failed file of every kind of row: the run's counts, the corrected and
    quarantine files in the bucket and the stored quarantined rows agree, and no identifier
    is written twice."""
    now = int(time.time()) - 60
    lines = [
        f"c1;{now};api_requests;cus_1;5",  # valid as it is
        f"c2;{now * 1000};api_requests;cus_1;6",  # ms -> s
        f"c3;{now};api_requests;cus_1;abc",  # quarantined
        f"c4;{now};api_requests;cus_1;1 234",  # corrected value
        f"c5;{now};api_requests;cus_1",  # short row
        f";{now};api_requests;cus_1;8",  # no identifier
        f"c7;{now};API-Requests;cus_1;9",  # an event name in another case
        f"c8;{now - 40 * 86400};api_requests;cus_1;9",  # too old
    ]
    content = HEADER.replace(",", ";") + "\n".join(lines) + "\n"
    _failed_file(service, "impset_cons", content, "cons.csv")
    [run] = service.rows(RemediationRun)
    bucket = _bucket(service)
    corrected = _csv_rows(sorted((bucket / "corrected").rglob("*.csv")))
    quarantined_file = _csv_rows(sorted((bucket / "quarantine").rglob("*.csv")))
    stored = service.rows(QuarantinedRow)
    assert run.input_rows == len(lines)
    assert run.valid + run.corrected + run.quarantined == run.input_rows
    assert len(corrected) == run.valid + run.corrected
    assert len(quarantined_file) == len(stored) == run.quarantined
    assert run.quarantined >= 2  # c3 and c8 at least
    ids = [r["identifier"] for r in corrected] + [q.identifier or "" for q in stored]
    assert len(ids) == len(set(ids))


def test_a_failed_file_redone_after_a_crash_writes_no_second_file_for_the_same_rows(
    service: Service,
) -> None:
    """The first try of a whole-file repair read the object (it held Stripe's bytes), uploaded
    its corrected file and failed before the run was done (here its audit's upload). The
    customer then uploaded a fixed version of the object. The redo read Stripe's copy instead,
    named its outputs after the file id, and derived the identifier of the row that had none
    from it: a second corrected file holding the same row under another identifier (both
    imported: billed twice). The redo names what the first try named, and keeps the corrected
    file the first try uploaded (imported: replaced, it is imported again), failing with an
    alert naming it (`OutputKeyTaken`)."""
    now = int(time.time()) - 60
    bucket = _bucket(service)
    failed = (
        HEADER.replace(",", ";") + f"f1;{now};api_requests;cus_1;5\n;{now};api_requests;cus_1;8\n"
    )
    (bucket / "daily.csv").write_text(failed)
    audit = bucket / "quarantine" / "impset_crash" / "daily.r1.audit.jsonl"
    audit.mkdir(parents=True)  # the audit's upload fails: the try ends before the run is done
    _failed_file(service, "impset_crash", failed, "daily.csv", source_object="daily.csv")
    [first] = service.rows(RemediationRun)
    assert first.status != "done"
    written = sorted(p.relative_to(bucket) for p in (bucket / "corrected").rglob("*.csv"))
    assert [str(p) for p in written] == ["corrected/impset_crash/daily.corrected.r1.csv"]
    before = _csv_rows([bucket / written[0]])
    assert sorted(row["payload_value"] for row in before) == ["5", "8"]

    time.sleep(1)  # the customer's fix comes after the event
    (bucket / "daily.csv").write_text(HEADER + f"f1,{now},api_requests,cus_1,5\n")
    audit.rmdir()
    with service.engine.begin() as connection:  # the retry's time has come
        connection.execute(
            text("UPDATE inbox_events SET next_attempt_at = :at WHERE status = 'pending'"),
            {"at": datetime.now(UTC) - timedelta(seconds=1)},
        )
    service.drain()
    [run] = service.rows(RemediationRun)
    now_written = sorted(p.relative_to(bucket) for p in (bucket / "corrected").rglob("*.csv"))
    assert now_written == written
    unnamed = [(r["identifier"], r["payload_value"]) for r in before if r["payload_value"] == "8"]
    assert unnamed[0][0].startswith("row-")
    # the redo makes the row without an identifier under the same one (f1 left out: Stripe's
    # connector takes the fixed version whole): another file than the one the first try
    # uploaded, which is kept as it was
    assert _csv_rows([bucket / written[0]]) == before
    key = str(written[0])
    assert run.status == "failed" and f"OutputKeyTaken: {key}: already holds" in (run.error or "")
    [alert] = [a for a in service.rows(Alert) if a.kind == "remediation_input"]
    assert alert.severity == "critical" and f"{key}: already holds" in alert.message


def test_a_newer_event_naming_another_failed_records_file_gets_it_remediated(
    service: Service,
) -> None:
    """The same import set came again, newer, under another event id, naming another
    failed-records file (recorded, the import set `pending` again for it). The task is one per
    import set: done with the first file, it swallowed the request, and the second file's rows
    were never remediated nor quarantined, the import set left pending."""
    now = int(time.time()) - 120
    header = HEADER.rstrip("\n") + ",error_code\n"
    first = service.sandbox.admin.upload_file(
        header + f"e1,{now * 1000},api_requests,cus_1,3,timestamp_in_future\n", "failed1.csv"
    )
    second = service.sandbox.admin.upload_file(
        header + f"e2,{now * 1000},api_requests,cus_1,4,timestamp_in_future\n", "failed2.csv"
    )
    for created, file in ((now, first), (now + 60, second)):
        body = {
            "id": "impset_again",
            "object": "data_management.import_set",
            "status": "succeeded_with_errors",
            "result": {"errors": {"file": file["id"], "row_count": 1}},
        }
        service.deliver(build_import_set_event("succeeded", body, created=created))
        service.drain()
    service.drain()  # the task queued again: the worker's next pass
    [impset] = service.rows(ImportSet)
    assert impset.errors_file_id == second["id"]
    assert sorted(_corrected_ids(_bucket(service))) == ["e1-mfx1", "e2-mfx1"]
    assert impset.remediation_status == "done"
    assert sorted(run.source for run in service.rows(RemediationRun)) == sorted(
        [first["id"], second["id"]]
    )


def test_an_event_dated_far_ahead_orders_no_later_event(service: Service) -> None:
    """An import-set event `created` in the year 2100 made every later event of the import set
    "older": the real `succeeded_with_errors` after it was not applied, its failed row never
    remediated (usage lost, nothing said). A time more than a day ahead is no time."""
    now = int(time.time()) - 120
    bucket = _bucket(service)
    source = HEADER + "".join(f"s{i},{now},api_requests,cus_1,{i}\n" for i in (1, 2, 3))
    stripe_copy = service.sandbox.admin.upload_file(source, "day.csv")
    failed_rows = HEADER.rstrip("\n") + ",error_code\n"
    failed_rows += f"s3,{now * 1000},api_requests,cus_1,3,timestamp_in_future\n"
    errors = service.sandbox.admin.upload_file(failed_rows, "failed_records.csv")
    base = {"id": "impset_ahead", "object": "data_management.import_set", "file": stripe_copy["id"]}
    processing = {**base, "status": "succeeded", "result": {"successes": {"row_count": 3}}}
    service.deliver(build_import_set_event("succeeded", processing, created=4102444800))
    service.drain()
    with_errors = {
        **base,
        "status": "succeeded_with_errors",
        "result": {"errors": {"file": errors["id"], "row_count": 1}, "successes": {"row_count": 2}},
    }
    service.deliver(build_import_set_event("succeeded", with_errors, created=now + 60))
    service.drain()
    [impset] = service.rows(ImportSet)
    assert impset.status == "succeeded_with_errors"
    assert _corrected_ids(bucket) == ["s3-mfx1"]
