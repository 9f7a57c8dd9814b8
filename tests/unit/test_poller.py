"""The poller's pure parts: planning a pass, turning one file into batches and failed rows."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation import poller, rowdigest
from remediation.core.columns import Batch, Column
from remediation.core.csvread import CsvColumns
from remediation.fieldvalues import parse_timestamp
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.poller import import_chunks, index_chunks
from remediation.ports import ObjectInfo
from remediation.readers import CsvRecords
from remediation.rowdigest import record_digests, row_digest
from remediation.rownames import (
    RowNames,
    RowsAlike,
    content_identifier,
    derived_identifier,
    source_tag,
    timestamps_of,
)
from remediation.validation import MeterIndex
from service.poller.files import FailedRecords
from service.poller.planning import PassLimits, is_usage_key, plan_pass
from tests.fuzz import fuzz_examples

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
    return list(
        import_chunks(records, index, now=NOW_TS, names=RowNames("k.csv", "t"), batch_size=batch)
    )


def test_a_row_neither_sent_nor_failed_stops_the_import_rather_than_vanish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Conservation per file, checked in code: a row the checks turned into no event and did
    not fail (the row check passing a row that has no meter) was dropped without a trace.
    Forced here by a check that passes every row: the import stops, naming the row."""
    monkeypatch.setattr(poller, "validate_record", lambda *_: None)
    with pytest.raises(poller.RowUnaccounted, match="row 3 is neither sent nor failed"):
        _chunks(CSV)


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
    payload = {"stripe_customer_id": "cus_B", "value": "7"}
    content = row_digest("api_requests", NOW_TS - 60, payload)
    assert chunks[0].events[1]["identifier"] == content_identifier("k.csv", content, 1)
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


def test_rows_without_identifiers_are_named_by_what_they_hold_and_which_alike_they_are() -> None:
    """A row with a timestamp: the object's key, its digest and its place among the rows
    alike, whatever the version and wherever it stands; one without a timestamp: per version
    and row. The name is pinned: a change to the digest would make every such row of a
    rewritten file new to Stripe again (billed twice)."""
    assert content_identifier("day.csv", 0x0123456789ABCDEF, 2) == (
        "mfx-1c0191376c953aa4-0123456789abcdef-2"
    )
    assert content_identifier("day.csv", -1, 1).split("-")[2] == "f" * 16
    payload = {"stripe_customer_id": "cus_A", "value": "1"}
    assert row_digest("api_requests", 1_700_000_000, payload) == 2867782742273103825

    def names(etag: str, rows: list[str]) -> list[str]:
        text = "timestamp,event_name,payload_stripe_customer_id,payload_value\n" + "".join(rows)
        records = read_records(io.BytesIO(text.encode()), FileFormat.CSV)
        index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
        chunks = import_chunks(records, index, now=NOW_TS, names=RowNames("day.csv", etag))
        return [ref.identifier for chunk in chunks for ref in chunk.rows]

    a, b = f"{NOW_TS - 60},api_requests,cus_A,1\n", f"{NOW_TS - 60},api_requests,cus_B,1\n"
    timeless = ",api_requests,cus_A,1\n"
    first = names("v1", [a, b, a, timeless])
    second = names("v2", [b, timeless, a, a, a])
    assert len(set(first)) == 4 and first[1] == second[0]
    assert second[2:4] == [first[0], first[2]]  # the first two rows alike, in row order
    assert second[4] not in first  # a third alike: new usage
    assert first[3] == derived_identifier(source_tag("day.csv", "v1"), 4)
    assert second[1] == derived_identifier(source_tag("day.csv", "v2"), 2)
    assert names("v1", [a])[0] != RowNames("copy.csv", "v1").names([1], [NOW_TS - 60], [0])[0]
    records = read_records(io.BytesIO(("timestamp,event_name,payload_stripe_customer_id,"
        "payload_value\n" + b + timeless + a + a + a).encode()), FileFormat.CSV)  # fmt: skip
    named = RowNames("day.csv", "v2").records(records, size=2)
    assert [record.identifier for record in named] == second  # an error report's read


def test_index_chunks_keep_identified_rows_only() -> None:
    records = read_records(io.BytesIO(CSV.encode()), FileFormat.CSV)
    groups = list(index_chunks(records, size=100))
    refs = [ref for group in groups for ref in group]
    assert len(refs) == 253 and refs[0].identifier == "id-1" and not any(r.sent for r in refs)
    assert [len(g) for g in groups] == [100, 100, 53]
    by_columns = list(index_chunks(_ColumnsOnly(io.BytesIO(CSV.encode()), ",", None), size=100))
    assert by_columns == groups  # a CSV's rows read as columns, never record by record


def test_failed_rows_keep_the_csv_header_read_as_columns(tmp_path: Path) -> None:
    """The failed-records file of a CSV object keeps its columns (a byte-order mark is not
    part of the first name), with the error columns added."""
    data = "\ufeffidentifier,timestamp,event_name,payload_stripe_customer_id,payload_value,region\n"
    data += f"a,{NOW_TS - 60},api_requests,cus_A,5,eu\nb,{NOW_TS - 60},nope,cus_A,6,us\n"
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    with FailedRecords(tmp_path / "f.csv", FileFormat.CSV) as failed:
        records = failed.open_records(io.BytesIO(data.encode()))
        chunks = list(import_chunks(records, index, now=NOW_TS, names=RowNames("k.csv", "t")))
        assert failed.write(chunk.failed for chunk in chunks) == 1
    names = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id"]
    assert failed.columns == [*names, "payload_value", "region"]
    lines = (tmp_path / "f.csv").read_text().splitlines()
    assert lines[0] == ",".join([*names, "payload_value", "region", "error_code", "error_message"])
    assert lines[1].startswith(f"b,{NOW_TS - 60},nope,cus_A,6,us,no_meter,")
    assert [e["identifier"] for c in chunks for e in c.events] == ["a"]
    empty = FailedRecords(tmp_path / "e.csv", FileFormat.CSV)
    nothing = empty.open_records(io.BytesIO(b""))
    assert list(import_chunks(nothing, index, now=NOW_TS, names=RowNames("k.csv", "t"))) == []


class _ColumnsOnly(CsvRecords):
    blocks: list[int]

    def __next__(self) -> object:  # type: ignore[override]
        raise AssertionError("a CSV object's rows are read as columns, never record by record")

    def columns(self, block_bytes: int = 1 << 20) -> CsvColumns:
        self.blocks = [*getattr(self, "blocks", []), block_bytes]
        return super().columns(block_bytes)


def test_a_csv_object_is_read_as_columns_not_record_by_record() -> None:
    """The poller read every row as a record (`csv.reader`), turned the records back into
    columns for the checks and into events one call at a time: 95,000-97,000 rows/s where
    the target is 100,000 (`bench/poller.py`). Now the rows are batches of columns and only
    the few failed rows become records."""
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = _ColumnsOnly(io.BytesIO(CSV.encode()), ",", None)
    chunks = list(import_chunks(records, index, now=NOW_TS, names=RowNames("k.csv", "t")))
    assert [len(c.events) for c in chunks] == [100, 100, 52]
    assert [r.identifier for c in chunks for r in c.failed] == ["id-3", "id-4"]
    # in blocks of its own size: in the remediation's 1.875 MB blocks, 1M rows peaked at
    # 115 MB where records took 84 MB (512 KB: 93 MB, as fast)
    assert records.blocks == [poller.BLOCK_BYTES] and poller.BLOCK_BYTES <= 1 << 19


def test_rows_sent_before_are_left_out_and_counted() -> None:
    """A resumed object: the rows an earlier pass sent are left out (counted as skipped),
    the others, a failed row of the acknowledged prefix among them, are checked again."""
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = read_records(io.BytesIO(CSV.encode()), FileFormat.CSV)

    def sent_before(batch: Batch) -> np.ndarray:  # type: ignore[type-arg]
        rows = batch.rows
        return (rows <= 200) & (rows != 3)  # row 3 failed: never sent

    chunks = list(
        import_chunks(
            records, index, now=NOW_TS, names=RowNames("k.csv", "t"), sent_before=sent_before
        )
    )
    assert sum(c.skipped for c in chunks) == 199
    rows = [ref.row_number for c in chunks for ref in c.rows]
    assert rows == [3, *range(201, 255)]
    assert [r.identifier for c in chunks for r in c.failed] == ["id-3"]
    assert [e["identifier"] for c in chunks for e in c.events] == [
        f"id-x{i}" for i in range(196, 250)
    ]  # rows 201-254; row 3 failed again, row 4 (a failure too) was left out as sent


def test_json_lines_events_keep_the_row_checks_conversions() -> None:
    """JSON values are typed: a number is sent as its plain text (2.0 as `2`), a boolean as
    `true`, each row's keys in its own order; a row without an identifier gets a derived one,
    and rows fail with the row check's own reason."""
    lines = [
        {"identifier": "j1", "timestamp": NOW_TS - 60, "event_name": "api_requests",
         "payload": {"stripe_customer_id": "cus_A", "value": 5}},
        {"timestamp": NOW_TS - 60, "event_name": "api_requests",
         "payload": {"value": 2.5, "stripe_customer_id": "cus_B"}},
        {"identifier": "j4", "timestamp": NOW_TS - 60, "event_name": "api_requests",
         "payload": {"region": True, "value": 2.0, "stripe_customer_id": "cus_C"}},
        {"identifier": "j3", "timestamp": "soon", "event_name": "api_requests",
         "payload": {"stripe_customer_id": "cus_A", "value": "1"}},
    ]  # fmt: skip
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = read_records(io.BytesIO(data), FileFormat.JSONL)
    chunks = list(import_chunks(records, index, now=NOW_TS, names=RowNames("k.csv", "t")))
    events = [e for c in chunks for e in c.events]
    content = row_digest(
        "api_requests", NOW_TS - 60, {"value": "2.5", "stripe_customer_id": "cus_B"}
    )
    stamp = datetime.fromtimestamp(NOW_TS - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert events == [
        {"event_name": "api_requests", "identifier": "j1",
         "payload": {"stripe_customer_id": "cus_A", "value": "5"}, "timestamp": stamp},
        {"event_name": "api_requests", "identifier": content_identifier("k.csv", content, 1),
         "payload": {"value": "2.5", "stripe_customer_id": "cus_B"}, "timestamp": stamp},
        {"event_name": "api_requests", "identifier": "j4",
         "payload": {"region": "true", "value": "2", "stripe_customer_id": "cus_C"},
         "timestamp": stamp},
    ]  # fmt: skip
    failed = [r for c in chunks for r in c.failed]
    assert [(r.identifier, r.error_code) for r in failed] == [("j3", "timestamp_invalid")]
    assert failed[0].error_message


def test_json_objects_lists_and_nulls_in_a_payload_are_sent_as_json_or_not_at_all() -> None:
    """Stripe's payload is text: a JSON object or list was sent as Python's text of it
    (`{'k': 1}`, `['a', 'b']`) and a null as `None`, under a dimension nobody wrote. An
    object or list is sent as its JSON text, a null not at all (a CSV's empty cell). The
    row's content (what tells a row sent before) is the same read as columns or records."""
    line = {
        "identifier": "n2", "timestamp": NOW_TS - 60, "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_A", "value": 5, "note": None,
                    "tags": ["a", "b"], "meta": {"k": 1, "x": 1.50}},
    }  # fmt: skip
    data = (json.dumps(line).replace("1.5", "1.50") + "\n").encode()
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    records = read_records(io.BytesIO(data), FileFormat.JSONL)
    [chunk] = list(import_chunks(records, index, now=NOW_TS, names=RowNames("k.jsonl", "t")))
    [event] = chunk.events
    assert event["payload"] == {
        "stripe_customer_id": "cus_A",
        "value": "5",
        "tags": '["a","b"]',
        "meta": '{"k":1,"x":1.50}',
    }
    [record] = list(read_records(io.BytesIO(data), FileFormat.JSONL))
    assert chunk.rows[0].content == record_digests([record])[0]


_CONTENT_ROWS = [
    {"identifier": "c1", "timestamp": NOW_TS - 60, "event_name": "api_requests",
     "payload": {"stripe_customer_id": "cus_A", "value": 5}},
    {"identifier": "c2", "timestamp": str(NOW_TS - 60), "event_name": "api_requests",
     "payload": {"value": 2.0, "stripe_customer_id": "cus_B", "region": True}},
    {"identifier": "c3", "timestamp": (NOW_TS - 60) * 1000, "event_name": "API_Requests",
     "payload": {"stripe_customer_id": "cus_C", "value": "1,234", "note": None}},
    {"identifier": "c4", "timestamp": "soon", "event_name": "nope",
     "payload": {"stripe_customer_id": "", "value": 0.1, "nested": {"a": [1, 2]}}},
    {"identifier": "c5", "timestamp": NOW_TS - 60, "event_name": "api_requests",
     "payload": {"stripe_customer_id": "cus_é,\"q\"", "value": "7"}},
    {"identifier": "c6", "timestamp": None, "event_name": None,
     "payload": {"value": "7"}},
    {"identifier": "c7", "timestamp": 1.5, "event_name": True,
     "payload": {"stripe_customer_id": None, "value": -0.0}},
    *({"identifier": f"n{n}", "timestamp": NOW_TS - n, "event_name": "api_requests",
       "payload": {"stripe_customer_id": f"cus_{n % 7}", "value": n}} for n in range(5000)),
]  # fmt: skip


def _content_files() -> dict[FileFormat, bytes]:
    lines = "".join(json.dumps(row) + "\n" for row in _CONTENT_ROWS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = ["stripe_customer_id", "value"]
    writer.writerow(["identifier", "timestamp", "event_name", *(f"payload_{k}" for k in keys)])
    for row in _CONTENT_ROWS:
        payload: dict[str, object] = row["payload"]  # type: ignore[assignment]
        writer.writerow([row["identifier"], row["timestamp"], row["event_name"]] +
                        [payload.get(k) for k in keys])  # fmt: skip
    return {
        FileFormat.JSONL: lines.encode(),
        FileFormat.JSON: json.dumps(_CONTENT_ROWS, indent=1).encode(),
        FileFormat.CSV: out.getvalue().encode(),
    }


def test_a_rows_content_is_the_same_read_as_columns_or_as_a_record() -> None:
    """The poller records the digest of every row it reads as columns (import and index mode);
    an error report compares it with the row read as a record: sent and failed rows, typed
    JSON values (numbers, booleans, null, objects), absent keys, empty cells, every format,
    rows past the first batch."""
    index = MeterIndex([Meter(id="mtr_1", event_name="api_requests")])
    for fmt, data in _content_files().items():
        records = list(read_records(io.BytesIO(data), fmt))
        by_record = dict(zip([r.identifier for r in records], record_digests(records), strict=True))
        assert len(set(by_record.values())) == len(_CONTENT_ROWS), fmt
        assert by_record["c1"] == row_digest(
            "api_requests", NOW_TS - 60, {"value": "5", "stripe_customer_id": "cus_A"}
        )
        chunks = import_chunks(
            read_records(io.BytesIO(data), fmt), index, now=NOW_TS, names=RowNames("k.csv", "t")
        )
        imported = {ref.identifier: ref.content for chunk in chunks for ref in chunk.rows}
        indexed = {
            ref.identifier: ref.content
            for group in index_chunks(read_records(io.BytesIO(data), fmt))
            for ref in group
        }
        assert imported == indexed == by_record, fmt


def test_digests_of_a_slice_are_those_of_its_rows() -> None:
    texts = pa.array([f"row {n}\x1e{'é' * (n % 5)}" for n in range(50)] + [None, ""])
    whole = rowdigest._texts(texts)
    assert (rowdigest._texts(texts.slice(7, 45)) == whole[7:52]).all()
    assert len(set(whole.tolist())) == 51 and whole[50] == whole[51]  # null reads as ""


_TEXTS = st.one_of(st.none(), st.text(alphabet='aü€𝄞0, "', max_size=8))


@settings(max_examples=60)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["api_requests", "ü", "x"]),
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            st.dictionaries(st.text(alphabet="kü€0", max_size=4), _TEXTS, max_size=8),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_a_batchs_digests_are_its_rows_digests(rows: list[Any]) -> None:
    """Every payload key of a batch digested at once (rows naming keys of their own: a
    thousand keys a batch) gives each row the digest it has alone: its keys, held or not."""
    keys = list(dict.fromkeys(key for _, _, payload in rows for key in payload))
    sent = {
        key: pa.array([payload.get(key) for _, _, payload in rows], pa.string()) for key in keys
    }
    names = Column(pa.array([name for name, _, _ in rows], pa.string()))
    batch = Batch(np.arange(len(rows)), names, names, names, {}, {}, *[pa.nulls(len(rows))] * 3)
    found = rowdigest.batch_digests(batch, [stamp for _, stamp, _ in rows], sent).tolist()
    alone = [
        row_digest(name, stamp, {k: v for k, v in payload.items() if v is not None})
        for name, stamp, payload in rows
    ]
    assert found == alone


def test_a_rows_content_changes_with_what_it_sends_only() -> None:
    payload = {"stripe_customer_id": "cus_A", "value": "5"}
    content = row_digest("api_requests", NOW_TS, payload)
    assert content == row_digest("api_requests", NOW_TS, dict(reversed(payload.items())))
    assert -(2**63) <= content < 2**63  # a BIGINT
    changed = [
        row_digest("api_requests", NOW_TS, {**payload, "stripe_customer_id": "cus_B"}),
        row_digest("api_requests", NOW_TS + 1, payload),
        row_digest("api_requests_v2", NOW_TS, payload),
        row_digest("api_requests", NOW_TS, {**payload, "region": "eu"}),
        row_digest("api_requests", None, payload),
        row_digest(None, NOW_TS, payload),
    ]
    assert content not in changed and len(set(changed)) == len(changed)


@settings(max_examples=fuzz_examples(100), deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1)), max_size=40),
        max_size=40,
    )
)
def test_fuzz_rows_alike_are_counted_in_row_order_across_batches(
    batches: list[list[int]],
) -> None:
    """Which row alike each is (the n of a row's name), counted in sorted runs of the digests
    seen and a bitmap of their low bits: the same as counting every row in order."""
    alike, counted = RowsAlike(), Counter[int]()
    for batch in batches:
        expected = []
        for digest in batch:
            counted[digest] += 1
            expected.append(counted[digest])
        assert alike.occurrences(np.array(batch, np.int64)).tolist() == expected


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.from_regex(r"\A[0-9]{1,20}\Z"),
            st.sampled_from(["", " 17", "-5", "+5", "1e9", "²", "0017", "9" * 19, "soon"]),
            st.integers(-(10**21), 10**21),
            st.floats(allow_nan=True),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_fuzz_timestamps_read_as_a_column_are_those_read_one_by_one(values: list[object]) -> None:
    """A text column of plain digits is cast at once; any other column row by row: both read
    every value as `parse_timestamp` does."""
    assert timestamps_of(Column.of(values)) == [parse_timestamp(v) for v in values]
    texts = [v for v in values if v is None or isinstance(v, str)]
    assert timestamps_of(Column.of(texts)) == [parse_timestamp(v) for v in texts]


def test_unsent_rows_are_handed_on_in_bounded_chunks_and_batches_keep_their_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chunk was handed on only once it held 100 events: a file of no valid row (or few)
    was held whole, failed rows and all (400,000 rows of millisecond timestamps: 915 MB).
    Rows not sent are handed on every `UNSENT_ROWS` in chunks of their own (no events, no
    batch); the batches, their events and their cuts (first row, last row: where a resumed
    pass starts) are what they were."""
    from remediation import poller

    rows = [
        f"id-{n},{NOW_TS - 60},{'api_requests' if n % 40 == 0 else 'gone'},cus_A,1\n"
        for n in range(1, 12_001)
    ]
    text = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
    text += "".join(rows)
    monkeypatch.setattr(poller, "UNSENT_ROWS", 10**9)
    whole = _chunks(text)
    monkeypatch.setattr(poller, "UNSENT_ROWS", 1024)
    bounded = _chunks(text)
    assert max(len(c.failed) for c in bounded) <= 1024 < max(len(c.failed) for c in whole)
    assert max(len(c.rows) - len(c.events) for c in bounded) <= 1024
    cut = [([e["identifier"] for e in c.events], c.span) for c in bounded if c.events]
    assert cut == [
        ([e["identifier"] for e in c.events], (c.rows[0].row_number, c.rows[-1].row_number))
        for c in whole
        if c.events
    ]
    assert [len(events) for events, _span in cut] == [100, 100, 100]
    for found in (bounded, whole):
        assert sorted(r.row_number for c in found for r in c.rows) == list(range(1, 12_001))
        failed = sorted(r.row_number for c in found for r in c.failed)
        assert failed == [n for n in range(1, 12_001) if n % 40]
