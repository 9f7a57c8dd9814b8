"""Fuzz suite: the readers of all three formats and the value/timestamp
parsers, over hostile input. Whatever comes in, the outcome is records or one UnreadableFile
with a reason: never another exception, a hang, or a row unaccounted for.

`make test` runs a few dozen examples per property; `make fuzz` runs the same properties with
many more (MFX_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from remediation.core.rules.values import normalize_number
from remediation.csvlayouts import CsvLayout
from remediation.engine import remediate
from remediation.errors import Uncorrectable, UnreadableFile
from remediation.fieldvalues import parse_timestamp, plain_number
from remediation.formats import FileFormat, read_records
from remediation.limits import DEFAULT_LIMITS
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import load_rules
from remediation.validation import MeterIndex, validate_record

EXAMPLES = int(os.environ.get("MFX_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests"), Meter("m2", "old", status="inactive")]
RULES = load_rules('[customers]\n"acme" = "cus_A"\n[meter_successors]\n"old" = "api_requests"\n')
HEADER = [
    "identifier",
    "timestamp",
    "event_name",
    "payload_stripe_customer_id",
    "payload_value",
    "error_code",
]

# Pieces that broke or could break a parser: exponents, digit floods, control characters,
# quotes, separators, Unicode digits, brackets.
HOSTILE = st.sampled_from(
    [
        "1e100000000",
        "1e5000",
        "1e309",
        "1e30",
        "-1e-400",
        "9" * 25,
        "9" * 5000,
        "1,234",
        "12.0",
        "NaN",
        "inf",
        "²",
        "٣",
        "\x00",
        "\u2028",
        "\x7f",
        '"',
        '""',
        ",",
        "\n",
        "\r",
        "[" * 40,
        "{",
        "x" * 101,
        str(NOW),
        str(NOW * 1000),
        "2025-11-24T16:00:00Z",
        "api_requests",
        "old",
        "acme",
        "cus_1",
    ]
)
TEXT = st.one_of(HOSTILE, st.text(max_size=12), st.lists(HOSTILE, max_size=3).map("".join))
CODES = st.sampled_from(
    ["", "timestamp_in_future", "meter_event_invalid_value", "no_meter", "archived_meter",
     "meter_event_customer_not_found", "timestamp_too_far_in_past", "odd", "field_too_long"]
)  # fmt: skip


def read_all(data: bytes, fmt: FileFormat) -> list[UsageRecord] | None:
    """The records, or None when the file as a whole is refused (with a reason)."""
    try:
        return list(read_records(io.BytesIO(data), fmt))
    except UnreadableFile as exc:
        assert exc.reason and "\n" not in exc.reason
        return None


def numbered(records: list[UsageRecord]) -> bool:
    return [r.row_number for r in records] == list(range(1, len(records) + 1))


# --- readers -------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=400), fmt=st.sampled_from(list(FileFormat)))
def test_fuzz_any_bytes_read_as_records_or_one_reason(data: bytes, fmt: FileFormat) -> None:
    records = read_all(data, fmt)
    assert records is None or numbered(records)


@FUZZ
@given(rows=st.lists(st.lists(TEXT, min_size=1, max_size=7), max_size=8))
def test_fuzz_csv_rows_are_all_accounted_for(rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([HEADER, *rows])
    records = read_all(buffer.getvalue().encode(), FileFormat.CSV)
    assert records is not None and numbered(records)
    assert len(records) == len(rows)  # quotes are written correctly: nothing swallowed


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False),
    TEXT,
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
RECORD = st.fixed_dictionaries(
    {},
    optional={
        "identifier": JSON_VALUE,
        "timestamp": JSON_VALUE,
        "event_name": JSON_VALUE,
        "payload": st.dictionaries(TEXT, JSON_VALUE, max_size=4) | JSON_VALUE,
        "error": st.fixed_dictionaries({"code": CODES}),
    },
)
RAW_LINE = st.one_of(
    RECORD.map(json.dumps),
    st.integers(1, 60).map(lambda n: "[" * n + "]" * n),
    st.integers(1000, 5000).map(lambda n: '{"payload": {"value": ' + "7" * n + "}}"),
    st.just('{"identifier": "a", "identifier": "b"}'),
    TEXT.filter(lambda t: "\n" not in t and "\r" not in t),
)


@FUZZ
@given(lines=st.lists(RAW_LINE, max_size=8))
def test_fuzz_json_lines_give_one_record_per_line(lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    records = read_all(data, FileFormat.JSONL)
    assert records is not None and numbered(records)
    # a line of JSON's whitespace alone is blank; any other character is a row's
    assert len(records) == len([line for line in lines if line.strip(" \t\r\n")])


ARRAY_ITEM = st.one_of(  # one JSON value each (raw text is fuzzed as bytes above)
    RECORD.map(json.dumps),
    JSON_VALUE.map(json.dumps),
    st.integers(1, 60).map(lambda n: "[" * n + "]" * n),
    st.integers(1000, 5000).map(lambda n: '{"payload": {"value": ' + "7" * n + "}}"),
    st.just('{"identifier": "a", "payload": {"v": 1, "v": 2}}'),
)


@FUZZ
@given(items=st.lists(ARRAY_ITEM, max_size=6))
def test_fuzz_json_arrays_read_or_fail_with_a_reason(items: list[str]) -> None:
    records = read_all(("[" + ",".join(items) + "]").encode(), FileFormat.JSON)
    assert records is None or (numbered(records) and len(records) == len(items))


# --- parsers -------------------------------------------------------------------------------


NUMBERISH = st.one_of(
    TEXT,
    st.integers(),
    st.integers(min_value=0, max_value=10**5000),
    st.floats(),
    st.from_regex(r"-?[0-9]{0,30}(\.[0-9]{0,30})?([eE][+-]?[0-9]{1,12})?", fullmatch=True),
)


@FUZZ
@given(raw=NUMBERISH)
def test_fuzz_timestamps_parse_within_bounds(raw: object) -> None:
    ts = parse_timestamp(raw)
    assert ts is None or abs(ts) < 10**20


@FUZZ
@given(raw=NUMBERISH)
@example(raw=-5.1783065299136175e-82)  # found by `make fuzz`: sign and "0." count too
@example(raw="1e100000000")
def test_fuzz_values_normalize_within_bounds(raw: object) -> None:
    try:
        number = normalize_number(raw)
    except Uncorrectable as exc:
        assert len(exc.reason) < 200  # a reason quotes the value cut short
        return
    if number is not None:
        assert len(number) <= DEFAULT_LIMITS.max_payload_value_chars
        assert plain_number(number) == number
    plain_number(raw)  # never raises either


@FUZZ
@given(
    ident=TEXT, ts=NUMBERISH, event=TEXT, customer=TEXT, value=NUMBERISH, key=TEXT
)  # fmt: skip
def test_fuzz_validation_always_answers(
    ident: str, ts: object, event: str, customer: str, value: object, key: str
) -> None:
    record = UsageRecord(1, ident, ts, event, {"stripe_customer_id": customer, key: value})
    problem = validate_record(record, MeterIndex(METERS), NOW)
    assert problem is None or (problem.code and len(problem.message) < 400)


# --- end to end: conservation, and columns write what records write --------------------


def remediate_csv(data: bytes, out: Path, fast: bool) -> tuple[dict[str, Any], dict[str, bytes]]:
    records = read_records(io.BytesIO(data), FileFormat.CSV)
    result = remediate(
        records if fast else list(records),
        source="fuzz.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=CsvLayout.from_header(HEADER).columns(),
        rejected=True,
    )
    return dict(result.summary, outputs=None), {p.name: p.read_bytes() for p in out.iterdir()}


CELLS = st.tuples(
    st.one_of(st.just("a"), TEXT), TEXT, TEXT, TEXT, TEXT, st.one_of(CODES, TEXT)
).map(list)


@FUZZ
@given(rows=st.lists(CELLS, min_size=1, max_size=10))
def test_fuzz_remediation_accounts_for_every_row(
    rows: list[list[str]], tmp_path_factory: Any
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([HEADER, *rows])
    tmp = tmp_path_factory.mktemp("fuzz")
    fast = remediate_csv(buffer.getvalue().encode(), tmp / "fast", True)
    general = remediate_csv(buffer.getvalue().encode(), tmp / "general", False)
    assert fast == general
    summary = fast[0]
    assert summary["input_rows"] == len(rows)
    assert summary["input_rows"] == summary["valid"] + summary["corrected"] + summary["quarantined"]
