"""An error report's runs read the objects it names in columns (as import-set runs do,
`core.leftout`), and give what reading them as records gave: the same corrected and
quarantine files byte for byte, the same audit, run counts, report status and outcome. Rows
without an identifier are named as the poller named them; rows first held by another version
are left out (counted `billed` when Stripe's connector took them long before the report).
Real sandbox (events, meters), a file:// bucket, both databases."""

# ruff: noqa: F811, E501  (the fixture imported from the module that defines it; pinned lines)
from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import Session, select

from sandbox.events import build_error_report_event
from service.models import (
    BucketObject,
    CorrectionAudit,
    ErrorReport,
    ImportedRow,
    InboxEvent,
    QuarantinedRow,
    RemediationRun,
)
from tests.integration.test_remediation_tasks import Service, _etag, service  # noqa: F401

CREATED = 1_796_000_000  # the report's window ends here (fixed: the outputs are pinned)
T = CREATED - 3600
DAY = 86_400
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
NOT_FOUND = "meter_event_customer_not_found"
FUTURE = "timestamp_in_future"
INVALID = "meter_event_invalid_value"

CSV = HEADER + "".join(
    f"{row}\n"
    for row in [
        f"c1,{T},api_requests,acme-42,5",  # sampled: customer not found
        f"c2,{T},api_requests,acme-42,6",  # its customer: selected with the code
        f"c3,{T * 1000},api_requests,cus_1,7",  # milliseconds: in the future
        f"c4,{T},api_requests,cus_1,abc",  # invalid value (sampled)
        f",{T},api_requests,acme-42,8",  # no identifier: named by its content
        ",,api_requests,acme-42,9",  # no identifier nor timestamp: named by its row
        f"h1,{T},api_requests,acme-42,10",  # first held long before: billed then
        f"h2,{T},api_requests,cus_1,11",  # first held by another version: left out
        f"h3,{T * 1000},api_requests,cus_1,12",  # same, would be in the future
        f"c5,{T},api_requests,cus_1,13",  # valid: not the report's
        f",{T},api_requests,acme-42,8",  # alike the fifth row: the next occurrence
    ]
)


# What the runs gave reading the objects as records (before they were read in columns)
FILES = {
    "corrected/report-EVT/day.csv/day.corrected.r1.csv": (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        "c1-mfx1,1795996400,api_requests,cus_acme,5\n"
        "c2-mfx1,1795996400,api_requests,cus_acme,6\n"
        "c3-mfx1,1795996400,api_requests,cus_1,7\n"
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-1-mfx1,1795996400,api_requests,cus_acme,8\n"
        "mfx-87c9cb904de88c4c-6-mfx1,,api_requests,cus_acme,9\n"
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-2-mfx1,1795996400,api_requests,cus_acme,8\n"
    ),
    "corrected/report-EVT/day.json/day.corrected.r1.json": (
        "[\n"
        '{"identifier":"a1-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_acme","value":5}},\n'
        '{"identifier":"a2-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_1","value":6}},\n'
        '{"identifier":"mfx-4bd20bf1cab46710-ab14b61201498795-1-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"acme-42","value":7}},\n'
        '{"identifier":"a3-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_1","value":"1234"}}\n'
        "]\n"
    ),
    "corrected/report-EVT/day.jsonl/day.corrected.r1.jsonl": (
        '{"identifier":"j1-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_acme","value":5}}\n'
        '{"identifier":"j2-mfx1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_1","value":"7"}}\n'
        '{"identifier":"mfx-6ba10dc09eb24a12-4-mfx1","event_name":"api_requests","payload":{"stripe_customer_id":"cus_acme","value":4}}\n'
    ),
    "quarantine/report-EVT/day.csv/day.quarantine.r1.csv": (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,mfx_code,mfx_reason\n"
        "c4,1795996400,api_requests,cus_1,abc,meter_event_invalid_value,value 'abc' is not a number\n"
    ),
    "quarantine/report-EVT/day.csv/day.r1.audit.jsonl": (
        '{"kind": "correction", "source": "day.csv", "row": 1, "identifier": "c1", "new_identifier": "c1-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.csv", "row": 2, "identifier": "c2", "new_identifier": "c2-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.csv", "row": 3, "identifier": "c3", "new_identifier": "c3-mfx1", "code": "timestamp_in_future", "rule": "timestamp_ms_to_s", "field": "timestamp", "before": 1795996400000, "after": 1795996400}\n'
        '{"kind": "quarantine", "source": "day.csv", "row": 4, "identifier": "c4", "code": "meter_event_invalid_value", "mfx_code": "meter_event_invalid_value", "reason": "value \'abc\' is not a number"}\n'
        '{"kind": "correction", "source": "day.csv", "row": 5, "identifier": "mfx-1c0191376c953aa4-c22de34f48e3aaf5-1", "new_identifier": "mfx-1c0191376c953aa4-c22de34f48e3aaf5-1-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.csv", "row": 6, "identifier": "mfx-87c9cb904de88c4c-6", "new_identifier": "mfx-87c9cb904de88c4c-6-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.csv", "row": 11, "identifier": "mfx-1c0191376c953aa4-c22de34f48e3aaf5-2", "new_identifier": "mfx-1c0191376c953aa4-c22de34f48e3aaf5-2-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "summary", "source": "day.csv", "generation": 1, "now": 1796000000, "input_rows": 7, "valid": 0, "corrected": 6, "quarantined": 1}\n'
    ),
    "quarantine/report-EVT/day.json/day.r1.audit.jsonl": (
        '{"kind": "correction", "source": "day.json", "row": 1, "identifier": "a1", "new_identifier": "a1-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.json", "row": 2, "identifier": "a2", "new_identifier": "a2-mfx1", "code": "timestamp_in_future", "rule": "timestamp_ms_to_s", "field": "timestamp", "before": 1795996400000, "after": 1795996400}\n'
        '{"kind": "correction", "source": "day.json", "row": 3, "identifier": "mfx-4bd20bf1cab46710-ab14b61201498795-1", "new_identifier": "mfx-4bd20bf1cab46710-ab14b61201498795-1-mfx1", "code": "timestamp_in_future", "rule": "timestamp_ms_to_s", "field": "timestamp", "before": 1795996400000, "after": 1795996400}\n'
        '{"kind": "correction", "source": "day.json", "row": 4, "identifier": "a3", "new_identifier": "a3-mfx1", "code": "meter_event_invalid_value", "rule": "normalize_value", "field": "payload.value", "before": "1,234", "after": "1234"}\n'
        '{"kind": "summary", "source": "day.json", "generation": 1, "now": 1796000000, "input_rows": 4, "valid": 0, "corrected": 4, "quarantined": 0}\n'
    ),
    "quarantine/report-EVT/day.jsonl/day.quarantine.r1.jsonl": (
        '{"identifier":"mfx-011b4a9a71014f60-42247cea3e5c3d21-1","timestamp":1795996400,"event_name":"api_requests","payload":{"stripe_customer_id":"cus_1","value":"abc"},"mfx_code":"meter_event_invalid_value","mfx_reason":"value \'abc\' is not a number"}\n'
    ),
    "quarantine/report-EVT/day.jsonl/day.r1.audit.jsonl": (
        '{"kind": "correction", "source": "day.jsonl", "row": 1, "identifier": "j1", "new_identifier": "j1-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "correction", "source": "day.jsonl", "row": 2, "identifier": "j2", "new_identifier": "j2-mfx1", "code": "timestamp_in_future", "rule": "timestamp_ms_to_s", "field": "timestamp", "before": 1795996400000, "after": 1795996400}\n'
        '{"kind": "quarantine", "source": "day.jsonl", "row": 3, "identifier": "mfx-011b4a9a71014f60-42247cea3e5c3d21-1", "code": "meter_event_invalid_value", "mfx_code": "meter_event_invalid_value", "reason": "value \'abc\' is not a number"}\n'
        '{"kind": "correction", "source": "day.jsonl", "row": 4, "identifier": "mfx-6ba10dc09eb24a12-4", "new_identifier": "mfx-6ba10dc09eb24a12-4-mfx1", "code": "meter_event_customer_not_found", "rule": "map_customer", "field": "payload.stripe_customer_id", "before": "acme-42", "after": "cus_acme"}\n'
        '{"kind": "summary", "source": "day.jsonl", "generation": 1, "now": 1796000000, "input_rows": 4, "valid": 0, "corrected": 3, "quarantined": 1}\n'
    ),
}
ALL_FILES_SHA256 = (
    "43206ed30c2551aa7dd3c3d9d55d3a8d37fa6a0ad9556706c02a0b52649398e5"  # with the metadata sidecars
)
AUDIT = [
    ("a1", "a1-mfx1", "meter_event_customer_not_found", "acme-42", "cus_acme"),
    ("a2", "a2-mfx1", "timestamp_in_future", "1795996400000", "1795996400"),
    ("a3", "a3-mfx1", "meter_event_invalid_value", "1,234", "1234"),
    ("c1", "c1-mfx1", "meter_event_customer_not_found", "acme-42", "cus_acme"),
    ("c2", "c2-mfx1", "meter_event_customer_not_found", "acme-42", "cus_acme"),
    ("c3", "c3-mfx1", "timestamp_in_future", "1795996400000", "1795996400"),
    ("j1", "j1-mfx1", "meter_event_customer_not_found", "acme-42", "cus_acme"),
    ("j2", "j2-mfx1", "timestamp_in_future", "1795996400000", "1795996400"),
    (
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-1",
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-1-mfx1",
        "meter_event_customer_not_found",
        "acme-42",
        "cus_acme",
    ),
    (
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-2",
        "mfx-1c0191376c953aa4-c22de34f48e3aaf5-2-mfx1",
        "meter_event_customer_not_found",
        "acme-42",
        "cus_acme",
    ),
    (
        "mfx-4bd20bf1cab46710-ab14b61201498795-1",
        "mfx-4bd20bf1cab46710-ab14b61201498795-1-mfx1",
        "timestamp_in_future",
        "1795996400000",
        "1795996400",
    ),
    (
        "mfx-6ba10dc09eb24a12-4",
        "mfx-6ba10dc09eb24a12-4-mfx1",
        "meter_event_customer_not_found",
        "acme-42",
        "cus_acme",
    ),
    (
        "mfx-87c9cb904de88c4c-6",
        "mfx-87c9cb904de88c4c-6-mfx1",
        "meter_event_customer_not_found",
        "acme-42",
        "cus_acme",
    ),
]
QUARANTINED = [
    (
        "day.csv",
        4,
        "c4",
        "meter_event_invalid_value",
        "value 'abc' is not a number",
        '{"identifier": "c4", "timestamp": "1795996400", "event_name": "api_requests", "payload": {"stripe_customer_id": "cus_1", "value": "abc"}, "mfx_code": "meter_event_invalid_value", "mfx_reason": "value \'abc\' is not a number"}',
    ),
    (
        "day.jsonl",
        3,
        "mfx-011b4a9a71014f60-42247cea3e5c3d21-1",
        "meter_event_invalid_value",
        "value 'abc' is not a number",
        '{"identifier": "mfx-011b4a9a71014f60-42247cea3e5c3d21-1", "timestamp": 1795996400, "event_name": "api_requests", "payload": {"stripe_customer_id": "cus_1", "value": "abc"}, "mfx_code": "meter_event_invalid_value", "mfx_reason": "value \'abc\' is not a number"}',
    ),
]
RUNS = [
    ("day.csv", 7, 0, 6, 1),
    ("day.json", 4, 0, 4, 0),
    ("day.jsonl", 4, 0, 3, 1),
]
OUTCOME = "remediated 18 row(s) for 16 reported error(s); 3 first held by a version uploaded more than a day before the report's window: Stripe's connector took them from it then, left out"


def _event(identifier: str | None, ts: int | None, customer: str, value: object) -> dict:
    row: dict[str, object] = {}
    if identifier is not None:
        row["identifier"] = identifier
    if ts is not None:
        row["timestamp"] = ts
    row["event_name"] = "api_requests"
    row["payload"] = {"stripe_customer_id": customer, "value": value}
    return row


JSONL_ROWS = [
    _event("j1", T, "acme-42", 5),  # sampled
    _event("j2", T * 1000, "cus_1", "7"),  # in the future
    _event(None, T, "cus_1", "abc"),  # no identifier, invalid value
    _event(None, None, "acme-42", 4),  # no identifier nor timestamp, its customer
    _event("k1", T, "acme-42", 3),  # first held by a copy long before: billed then
    _event("k2", T * 1000, "cus_1", 2),  # first held by the copy: left out
    _event("j3", T, "cus_1", 1),  # valid
]
JSON_ROWS = [
    _event("a1", T, "acme-42", 5),  # sampled
    _event("a2", T * 1000, "cus_1", 6),  # in the future
    _event(None, T * 1000, "acme-42", 7),  # no identifier, in the future
    _event("a3", T, "cus_1", "1,234"),  # invalid value: corrected
    _event("k3", T, "cus_1", "abc"),  # first held by the copy, recently: left out
]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _version(svc: Service, key: str, etag: str, uploaded: int, rows: list[tuple[str, int]]) -> None:
    """What the poller recorded of one object version (index mode: nothing sent)."""
    with Session(svc.engine) as session:
        session.add(
            BucketObject(
                key=key,
                etag=etag,
                size=10,
                status="imported",
                last_modified=_at(uploaded),
                first_seen=_at(uploaded),
            )
        )
        for identifier, number in rows:
            session.add(
                ImportedRow(
                    identifier=identifier,
                    object_key=key,
                    etag=etag,
                    row_number=number,
                    event_name="api_requests",
                )
            )
        session.commit()


def _setup(svc: Service) -> Path:
    bucket = Path(svc.settings.bucket_url.removeprefix("file://"))
    bucket.mkdir(parents=True, exist_ok=True)
    (bucket / "day.csv").write_text(CSV)
    (bucket / "day.jsonl").write_text("".join(json.dumps(r) + "\n" for r in JSONL_ROWS))
    (bucket / "day.json").write_text(json.dumps(JSON_ROWS, indent=1) + "\n")
    # earlier versions first: the rows they hold were first held there
    _version(svc, "day.csv", "old-etag", CREATED - 3 * DAY, [("h1", 1), ("h2", 2)])
    _version(svc, "copy.jsonl", "copy-etag", CREATED - 3 * DAY, [("k1", 1), ("k2", 2)])
    _version(svc, "day.csv", "recent-etag", CREATED - 7200, [("h3", 1)])
    _version(svc, "copy.json", "copy2-etag", CREATED - 7200, [("k3", 1)])
    # an identifier is recorded with the first version holding it (one row per object)
    named = {"day.csv": ["c1", "c2", "c3", "c4", "c5"]}
    named["day.jsonl"] = ["j1", "j2", "k1", "k2", "j3"]
    named["day.json"] = ["a1", "a2", "a3", "k3"]
    for key, identifiers in named.items():
        rows = [(identifier, n) for n, identifier in enumerate(identifiers, start=1)]
        _version(svc, key, _etag(svc, key), CREATED - 1800, rows)
    return bucket


def _report(svc: Service) -> dict[str, object]:
    meter = svc.sandbox.admin.meters()[0]["id"]
    samples = [(NOT_FOUND, "No such customer: acme-42", i) for i in ("c1", "j1", "a1")]
    samples += [(INVALID, "Invalid value", "c4"), (FUTURE, "In the future", "c3")]
    event = build_error_report_event(meter, samples, created=CREATED)
    reason = event["data"]["reason"]  # type: ignore[index]
    for entry in reason["error_types"]:
        entry["error_count"] = {NOT_FOUND: 8, INVALID: 3, FUTURE: 5}[entry["code"]]
    reason["error_count"] = 16
    return event


def _outcomes(svc: Service, bucket: Path) -> dict[str, object]:
    inputs = {"day.csv", "day.jsonl", "day.json"}
    files = {
        re.sub(r"report-evt_\w+", "report-EVT", str(p.relative_to(bucket))): p.read_text()
        for p in sorted(bucket.rglob("*"))
        if p.is_file() and p.name not in inputs
    }
    audit = sorted(
        (a.identifier, a.new_identifier, a.code, a.before, a.after)
        for a in svc.rows(CorrectionAudit)
    )
    quarantined = sorted(
        (q.source, q.row_number, q.identifier, q.code, q.reason, json.dumps(q.record))
        for q in svc.rows(QuarantinedRow)
    )
    runs = sorted(
        (r.source, r.input_rows, r.valid, r.corrected, r.quarantined)
        for r in svc.rows(RemediationRun)
    )
    [report] = svc.rows(ErrorReport)
    with Session(svc.engine) as session:
        task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
    return {
        "files": files,
        "audit": audit,
        "quarantined": quarantined,
        "runs": runs,
        "report": report.status,
        "outcome": (task.status, task.outcome),
    }


def test_an_error_reports_runs_give_what_they_gave_over_records(service: Service) -> None:
    bucket = _setup(service)
    service.deliver(_report(service))
    service.drain()
    found = _outcomes(service, bucket)
    files = found["files"]
    assert isinstance(files, dict)
    assert {k: v for k, v in files.items() if not k.endswith(".meta.json")} == FILES
    pinned = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    assert pinned == ALL_FILES_SHA256
    assert found["audit"] == AUDIT
    assert found["quarantined"] == QUARANTINED
    assert found["runs"] == RUNS
    assert found["report"] == "remediated"
    assert found["outcome"] == ("done", OUTCOME)
