"""The poller's pure parts: planning a pass, turning one file into batches and failed rows."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.poller import (
    derived_identifier,
    import_chunks,
    index_chunks,
    read_csv_with_header,
    source_tag,
)
from remediation.ports import ObjectInfo
from remediation.validation import MeterIndex
from service.poller.planning import PassLimits, is_usage_key, plan_pass

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())


def _obj(key: str, etag: str = "e1", size: int = 10, age: timedelta = timedelta()) -> ObjectInfo:
    return ObjectInfo(key=key, etag=etag, size=size, last_modified=NOW - age)


def test_usage_keys() -> None:
    assert is_usage_key("in/a.csv") and is_usage_key("in/a.JSONL") and is_usage_key("b.json")
    assert not is_usage_key("in/a.csv.meta.json")
    assert not is_usage_key("in/a.txt")
    assert not is_usage_key("in/quarantine/a.csv", ["in/quarantine/"])
    assert is_usage_key("in/corrected/a.r1.csv", ["in/quarantine/"])


def test_plan_uses_key_and_etag_not_a_time_cursor() -> None:
    same_second = [_obj("b.csv"), _obj("a.csv"), _obj("c.csv")]
    plan = plan_pass(same_second, {("a.csv", "e1")}, now=NOW, first_sync=False)
    assert [o.key for o in plan.take] == ["b.csv", "c.csv"]  # ties broken by key
    changed = plan_pass([_obj("a.csv", etag="e2")], {("a.csv", "e1")}, now=NOW, first_sync=False)
    assert [o.key for o in changed.take] == ["a.csv"]  # a new version of a seen key


def test_plan_orders_oldest_first_and_skips_sidecars_quarantine_and_empty() -> None:
    objects = [
        _obj("new.csv"),
        _obj("old.jsonl", age=timedelta(hours=2)),
        _obj("old.jsonl.meta.json"),
        _obj("quarantine/x.csv"),
        _obj("empty.csv", size=0),
    ]
    plan = plan_pass(objects, set(), now=NOW, first_sync=False, excluded_prefixes=["quarantine/"])
    assert [o.key for o in plan.take] == ["old.jsonl", "new.csv"]
    assert [(o.key, reason) for o, reason in plan.skip] == [("empty.csv", "empty object")]


def test_first_sync_looks_back_90_days_only() -> None:
    objects = [
        _obj("ancient.csv", age=timedelta(days=91)),
        _obj("recent.csv", age=timedelta(days=89)),
    ]
    first = plan_pass(objects, set(), now=NOW, first_sync=True)
    assert [o.key for o in first.take] == ["recent.csv"]
    assert [o.key for o, _ in first.skip] == ["ancient.csv"]
    later = plan_pass(objects, set(), now=NOW, first_sync=False)
    assert len(later.take) == 2


def test_pass_limits_files_and_bytes() -> None:
    many = [_obj(f"{i:03d}.csv") for i in range(60)]
    plan = plan_pass(many, set(), now=NOW, first_sync=False)
    assert len(plan.take) == 50 and plan.deferred == 10
    big = [_obj(f"{i}.csv", size=4 * 1024**3) for i in range(4)]
    plan = plan_pass(big, set(), now=NOW, first_sync=False)
    assert len(plan.take) == 2 and plan.deferred == 2  # 8 GB taken, a third would pass 10 GB
    huge = plan_pass(
        [_obj("h.csv", size=11 * 1024**3)], set(), now=NOW, first_sync=False, limits=PassLimits()
    )
    assert len(huge.take) == 1  # one oversized file still makes progress


CSV = (
    "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    f"id-1,{NOW_TS - 60},api_requests,cus_A,5\n"
    f",{NOW_TS - 60},api_requests,cus_B,7\n"
    f"id-3,{NOW_TS - 60},nope,cus_A,1\n"
    f"id-4,{NOW_TS + 3600},api_requests,cus_A,1\n"
) + "".join(f"id-x{i},{NOW_TS - 10},api_requests,cus_A,{i}\n" for i in range(250))


def _chunks(text: str, batch: int = 100) -> list:  # type: ignore[type-arg]
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = read_records(io.BytesIO(text.encode()), FileFormat.CSV)
    return list(import_chunks(records, index, now=NOW_TS, tag="t", batch_size=batch))


def test_import_chunks_batch_valid_rows_and_collect_failures() -> None:
    chunks = _chunks(CSV)
    assert [len(c.events) for c in chunks] == [100, 100, 52]
    first = chunks[0].events[0]
    assert first == {
        "event_name": "api_requests",
        "identifier": "id-1",
        "payload": {"stripe_customer_id": "cus_A", "value": "5"},
        "timestamp": datetime.fromtimestamp(NOW_TS - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert chunks[0].events[1]["identifier"] == derived_identifier("t", 2) == "mfx-t-2"
    failed = [r for c in chunks for r in c.failed]
    assert [(r.identifier, r.error_code) for r in failed] == [
        ("id-3", "no_meter"),
        ("id-4", "timestamp_in_future"),
    ]
    rows = [ref for c in chunks for ref in c.rows]
    assert len(rows) == 254 and sum(ref.sent for ref in rows) == 252
    assert rows[0].timestamp == NOW_TS - 60 and rows[2].sent is False


def test_identifiers_derive_stably_per_object_version() -> None:
    assert source_tag("a.csv", "e1") == source_tag("a.csv", "e1")
    assert source_tag("a.csv", "e1") != source_tag("a.csv", "e2")
    assert _chunks(CSV)[0].events[1]["identifier"] == _chunks(CSV)[0].events[1]["identifier"]


def test_index_chunks_keep_identified_rows_only() -> None:
    records = read_records(io.BytesIO(CSV.encode()), FileFormat.CSV)
    groups = list(index_chunks(records, size=100))
    refs = [ref for group in groups for ref in group]
    assert len(refs) == 253 and refs[0].identifier == "id-1" and not any(r.sent for r in refs)
    assert [len(g) for g in groups] == [100, 100, 53]


def test_read_csv_with_header_keeps_columns() -> None:
    header, records = read_csv_with_header(
        io.BytesIO(b"\xef\xbb\xbfidentifier,payload_value\nx,1\n")
    )
    assert header == ["identifier", "payload_value"]
    assert [(r.identifier, r.payload) for r in records] == [("x", {"value": "1"})]
    empty_header, empty = read_csv_with_header(io.BytesIO(b""))
    assert empty_header == [] and list(empty) == []
