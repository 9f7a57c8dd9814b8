"""Hostile values and sizes: every one ends in a quarantined row
with a reason that states facts, within bounded time, read as columns or as records alike."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from remediation.csvlayouts import CsvLayout
from remediation.engine import remediate
from remediation.fieldvalues import parse_timestamp
from remediation.formats import FileFormat, read_records
from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import Rules, load_rules
from remediation.validation import MeterIndex, validate_record

NOW = 1_764_000_000  # 2025-11-24T16:00:00Z
METERS = [Meter("m1", "api_requests")]
HEADER = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"]
CODED = [*HEADER, "error_code"]
MB10 = 10 * 1024 * 1024


def to_csv(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def run(
    data: bytes, out: Path, *, fast: bool = True, rules: Rules | None = None, now: int = NOW
) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, bytes]]:
    """(summary, quarantined rows, every output file's bytes) of one CSV failed-records run."""
    header = next(csv.reader([data.split(b"\n", 1)[0].decode()]))
    records = read_records(io.BytesIO(data), FileFormat.CSV)
    result = remediate(
        records if fast else list(records),
        source="in.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=rules or Rules(),
        now=now,
        out_dir=out,
        columns=CsvLayout.from_header(header).columns(),
        rejected=True,
    )
    quarantined: list[dict[str, str]] = []
    for path in result.summary["outputs"]["quarantine"]:
        with open(path, newline="") as handle:
            quarantined += list(csv.DictReader(handle))
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return result.summary, quarantined, files


def both_paths(
    data: bytes, tmp: Path, **kwargs: Any
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Run on the CSV read as columns and on its records; they must write the same bytes."""
    fast = run(data, tmp / "fast", **kwargs)
    general = run(data, tmp / "general", fast=False, **kwargs)
    assert fast[2] == general[2]
    summary = fast[0]
    assert summary["input_rows"] == summary["valid"] + summary["corrected"] + summary["quarantined"]
    return summary, fast[1]


def row(value: str = "5", ts: str = str(NOW), ident: str = "a", code: str = "") -> list[str]:
    return [ident, ts, "api_requests", "cus_1", value, code]


# --- 1. values ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["", "meter_event_invalid_value"])
def test_huge_exponent_is_quarantined_at_once(tmp_path: Path, code: str) -> None:
    started = time.monotonic()
    summary, (bad,) = both_paths(to_csv(CODED, [row("1e100000000", code=code)]), tmp_path)
    assert time.monotonic() - started < 5  # it hung at 100 % CPU before
    assert summary["quarantined"] == 1
    assert (
        bad["mfx_reason"] == "value '1e100000000' has 100000001 integer digits; at most 20 allowed"
    )


@pytest.mark.parametrize(
    ("value", "digits"), [("1e5000", 5001), ("1e309", 310), ("1e30", 31), ("-2.5E+25", 26)]
)
def test_exponents_are_never_expanded_past_twenty_digits(
    tmp_path: Path, value: str, digits: int
) -> None:
    rows = [row(value, code="meter_event_invalid_value"), row(value, ident="b")]
    summary, quarantined = both_paths(to_csv(CODED, rows), tmp_path)
    assert (summary["corrected"], summary["quarantined"]) == (0, 2)  # "corrected" before
    for bad in quarantined:
        assert bad["payload_value"] == value
        assert (
            bad["mfx_reason"] == f"value {value!r} has {digits} integer digits; at most 20 allowed"
        )


def test_twenty_integer_digits_and_twelve_places_still_pass(tmp_path: Path) -> None:
    ok = ["9" * 20, "-" + "9" * 20, "1." + "5" * 12, "0.000000000001"]
    rows = [row(v, ident=f"ok{i}") for i, v in enumerate(ok)]
    rows += [row("1e19", ident="exp", code="meter_event_invalid_value")]
    rows += [row("9" * 21, ident="long"), row("1." + "5" * 13, ident="places")]
    summary, quarantined = both_paths(to_csv(CODED, rows), tmp_path)
    assert (summary["valid"], summary["corrected"]) == (4, 1)
    reasons = {r["identifier"]: r["mfx_reason"] for r in quarantined}
    assert reasons == {
        "long": f"value '{'9' * 21}' has 21 integer digits; at most 20 allowed",
        "places": f"value '1.{'5' * 13}' (13 decimal places) has too many digits; policy "
        "round_too_many_digits is off",
    }


def test_five_thousand_digit_timestamp_is_a_reason_not_a_traceback(tmp_path: Path) -> None:
    stamp = "9" * 5000
    rows = [row(ts=stamp), row(ts=stamp, ident="b", code="timestamp_in_future")]
    summary, quarantined = both_paths(to_csv(CODED, rows), tmp_path)
    assert summary["quarantined"] == 2
    for bad in quarantined:
        assert bad["timestamp"] == stamp  # kept whole in the quarantine file
        assert bad["mfx_reason"] == (
            f"timestamp {stamp[:40]!r}… (5000 characters) is neither unix seconds nor ISO-8601"
        )
    assert parse_timestamp(10**5000) is None and parse_timestamp(stamp) is None


def test_json_numbers_past_the_limits(tmp_path: Path) -> None:
    lines = [
        {"identifier": "f", "event_name": "api_requests", "timestamp": NOW,
         "payload": {"stripe_customer_id": "cus_1", "value": 1e30}},
        {"identifier": "i", "event_name": "api_requests", "timestamp": NOW,
         "payload": {"stripe_customer_id": "cus_1", "value": 10**25}},
        {"identifier": "t", "event_name": "api_requests", "timestamp": 10**30,
         "payload": {"stripe_customer_id": "cus_1", "value": 1}},
    ]  # fmt: skip
    data = "\n".join(json.dumps(line) for line in lines).encode()
    data += b'\n{"identifier": "n", "payload": {"value": ' + b"7" * 5000 + b"}}\n"
    result = remediate(
        read_records(io.BytesIO(data), FileFormat.JSONL),
        source="in.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        rejected=True,
    )
    (path,) = result.summary["outputs"]["quarantine"]
    reasons = {
        r.get("identifier"): (r["mfx_code"], r["mfx_reason"])
        for r in map(json.loads, Path(path).read_text().splitlines())
    }
    assert reasons == {
        "f": ("meter_event_invalid_value", "value 1e+30 has 31 integer digits; at most 20 allowed"),
        "i": (
            "meter_event_value_too_many_digits",
            f"value {10**25} has 26 integer digits; at most 20 allowed",
        ),
        "t": ("timestamp_invalid", f"timestamp {10**30} is neither unix seconds nor ISO-8601"),
        None: (
            "malformed_row",
            "line holds a number too long to read (thousands of digits)",
        ),
    }


# --- 2. sizes and characters -------------------------------------------------------------


@pytest.mark.parametrize("column", [0, 2, 3, 4])
def test_ten_megabyte_field_is_quarantined_not_valid(tmp_path: Path, column: int) -> None:
    cells = row()
    cells[column] = "7" * MB10
    name = {
        0: "identifier",
        2: "event_name",
        3: "payload value 'stripe_customer_id'",
        4: "payload value 'value'",
    }[column]
    summary, (bad,) = both_paths(to_csv(CODED, [cells, row(ident="ok")]), tmp_path)
    assert (summary["valid"], summary["quarantined"]) == (1, 1)
    assert bad["mfx_code"] == "field_too_long"
    assert bad["mfx_reason"] == f"{name} is {MB10} characters long; at most 100 allowed"


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        (["a\x00b", str(NOW), "api_requests"], "identifier 'a\\x00b' holds a control character: "
         "U+0000 at position 2"),
        (["a", str(NOW), "api_\x00requests"], "event_name 'api_\\x00requests' holds a control "
         "character: U+0000 at position 5"),
        (["a", str(NOW) + "\u2028", "api_requests"], "timestamp '1764000000\\u2028' holds a "
         "control character: U+2028 at position 11"),
        (["a\x7f", str(NOW), "api_requests"], "identifier 'a\\x7f' holds a control character: "
         "U+007F at position 2"),
    ],
)  # fmt: skip
def test_control_characters_never_pass(tmp_path: Path, cells: list[str], reason: str) -> None:
    for code in ("", "timestamp_too_far_in_past"):
        summary, (bad,) = both_paths(
            to_csv(CODED, [[*cells, "cus_1", "5", code]]), tmp_path / (code or "none")
        )
        # a row reported under a code is quarantined under it, with the reason that stops it
        assert (bad["mfx_code"], bad["mfx_reason"]) == (code or "control_character", reason)
        assert summary["quarantined"] == 1


def test_limits_come_from_the_policy(tmp_path: Path) -> None:
    rules = load_rules("[policy]\nmax_identifier_chars = 4\nmax_value_integer_digits = 3\n")
    rows = [row(ident="abcde"), row("1234", ident="b"), row("123", ident="c")]
    summary, quarantined = both_paths(to_csv(CODED, rows), tmp_path, rules=rules)
    assert summary["valid"] == 1
    assert [r["mfx_reason"] for r in quarantined] == [
        "identifier is 5 characters long; at most 4 allowed",
        "value '1234' has 4 integer digits; at most 3 allowed",
    ]


def test_payload_keys_are_bounded(tmp_path: Path) -> None:
    header = [*CODED, "payload_" + "k" * 101, "payload_ok\x01"]
    rows = [[*row(ident="long"), "x", ""], [*row(ident="ctrl"), "", "y"], [*row(), "", ""]]
    summary, quarantined = both_paths(to_csv(header, rows), tmp_path)
    assert (summary["valid"], summary["quarantined"]) == (1, 2)  # an empty cell is no key
    assert [r["mfx_reason"] for r in quarantined] == [
        "payload key is 101 characters long; at most 100 allowed",
        "payload key 'ok\\x01' holds a control character: U+0001 at position 3",
    ]


def test_validation_reports_limits_to_the_poller() -> None:
    index = MeterIndex(METERS, limits=FieldLimits(max_identifier_chars=3))
    record = UsageRecord(1, "abcd", NOW, "api_requests", {"stripe_customer_id": "c", "value": "1"})
    problem = validate_record(record, index, NOW)
    assert problem is not None and problem.code == "field_too_long"
    default = MeterIndex(METERS)
    assert default.limits == DEFAULT_LIMITS
    record.identifier = "x" * MB10
    assert validate_record(record, default, NOW) is not None
    record.identifier = "a"
    record.payload["note"] = ["x" * MB10]  # JSON: sent as its text, so bounded like one
    problem = validate_record(record, default, NOW)
    assert problem is not None and problem.message == (
        f"payload value 'note' is sent as {MB10 + 4} characters; at most 100 allowed"
    )


def test_payload_values_that_are_no_text_are_measured_as_they_are_sent(tmp_path: Path) -> None:
    """README (Bounded input): payload values at most 100 characters. A JSON integer was
    measured by an estimate from its bits (`10**100`, 101 digits, passed and was sent; 2**333,
    as many digits, did not), an object or a list by Python's `str()` of it (`{"k0":"v",...}`,
    100 characters as sent, refused as 119; a list of one string of 96 quotes, 196 as sent,
    passed as 100), a float by its text as written (`1e20` under a limit of 10 was sent as
    21 digits). Each is measured as a meter event sends it, in the row check the poller
    trusts and in the batch check alike."""
    obj = {f"k{i}": "v" for i in range(9)} | {"z": "x" * 11}
    values: dict[str, str] = {
        "i101": "1" + "0" * 100,
        "neg101": "-1" + "0" * 99,
        "i100": "1" + "0" * 99,
        "obj100": json.dumps(obj, separators=(",", ":")),
        "list196": json.dumps(['"' * 96]),
        "f1e20": "1e20",
    }
    assert len(values["obj100"]) == 100
    lines = "".join(
        f'{{"identifier": "{name}", "timestamp": {NOW}, "event_name": "api_requests", '
        f'"payload": {{"stripe_customer_id": "cus_1", "value": "5", "d": {value}}}}}\n'
        for name, value in values.items()
    ).encode()

    def held(limits: FieldLimits) -> dict[str, str]:
        rules = load_rules(
            f"[policy]\nmax_payload_value_chars = {limits.max_payload_value_chars}\n"
        )
        result = remediate(
            read_records(io.BytesIO(lines), FileFormat.JSONL, limits=limits),
            source="in.jsonl",
            fmt=FileFormat.JSONL,
            meters=METERS,
            rules=rules,
            now=NOW,
            out_dir=tmp_path / str(limits.max_payload_value_chars),
        )
        index = MeterIndex(METERS, limits=limits)
        records = list(read_records(io.BytesIO(lines), FileFormat.JSONL, limits=limits))
        by_rows = {r.identifier: validate_record(r, index, NOW) for r in records}
        quarantined = {}
        for path in result.summary["outputs"]["quarantine"]:
            for row in map(json.loads, Path(path).read_text().splitlines()):
                quarantined[row["identifier"]] = row["mfx_reason"]
        assert {k: p.message for k, p in by_rows.items() if p} == quarantined  # both agree
        return quarantined

    assert held(DEFAULT_LIMITS) == {
        "i101": "payload value 'd' is a number of 101 characters; at most 100 allowed",
        "neg101": "payload value 'd' is a number of 101 characters; at most 100 allowed",
        "list196": "payload value 'd' is sent as 196 characters; at most 100 allowed",
    }
    lowered = held(FieldLimits(max_payload_value_chars=10))
    assert lowered["f1e20"] == "payload value 'd' is sent as 21 characters; at most 10 allowed"
    assert "i100" in lowered and "obj100" in lowered
    # a boolean is sent as `false`: 5 characters (it was measured as nothing at all)
    index = MeterIndex(METERS, limits=FieldLimits(max_payload_value_chars=4))
    record = UsageRecord(1, "b", NOW, "api_requests", {"stripe_customer_id": "c", "value": "1"})
    record.payload["flag"] = False
    problem = validate_record(record, index, NOW)
    assert problem is not None and problem.message == (
        "payload value 'flag' is sent as 5 characters; at most 4 allowed"
    )


# --- 3. structure ------------------------------------------------------------------------


def test_deep_json_lines_and_array_elements_are_quarantined_rows() -> None:
    """An array element past the decoder's own recursion limit failed the whole file; it is
    one refused row, as a line of JSON Lines is (`test_json_numbers_depth` remediates it)."""
    deep = b"[" * 100_000 + b"]" * 100_000
    good = b'{"identifier": "g", "payload": {"value": 1}}'
    records = list(read_records(io.BytesIO(deep + b"\n" + good + b"\n"), FileFormat.JSONL))
    assert [r.malformed for r in records] == ["line is nested deeper than 32 levels", None]
    array = b"[" + good + b"," + deep + b"," + good + b"]"
    records = list(read_records(io.BytesIO(array), FileFormat.JSON))
    assert [r.malformed for r in records] == [None, "element is nested deeper than 32 levels", None]
    shallow = b"[" + good + b"," + b"[" * 40 + b"]" * 40 + b"]"
    records = list(read_records(io.BytesIO(shallow), FileFormat.JSON))
    assert [r.malformed for r in records] == [None, "element is nested deeper than 32 levels"]


def test_an_open_quote_says_what_it_swallowed(tmp_path: Path) -> None:
    data = to_csv(CODED, [row(ident="a")]) + b'b,1764000000,api_requests,"cus_1,5,\n'
    data += b"c,1764000000,api_requests,cus_1,5,\nd,1764000000,api_requests,cus_1,5,\n"
    summary, (bad,) = both_paths(data, tmp_path)
    assert (summary["input_rows"], summary["valid"], summary["quarantined"]) == (2, 1, 1)
    assert bad["mfx_reason"] == (
        "row has 4 fields, header has 6; a quoted field holds 3 line break(s): a quote left "
        "open swallowed the lines after it"
    )


@pytest.mark.parametrize(
    "code", ["meter_event_invalid_value", "no_meter", "timestamp_in_future", "bogus_code"]
)
def test_a_row_of_the_wrong_width_is_quarantined_as_malformed_whatever_its_code(
    tmp_path: Path, code: str
) -> None:
    """A row with a field more than its header, reported `meter_event_invalid_value` with a
    plain value: its code's rule refused it first ("value '5' is already a plain number;
    nothing to correct") and the fact that matters, the row's shape, was never said."""
    data = (
        to_csv(CODED, [row(ident="ok", code=code)])
        + f"w,{NOW},api_requests,cus_1,5,{code},x\n".encode()
    )
    summary, quarantined = both_paths(data, tmp_path)
    wide = [q for q in quarantined if q["identifier"] == "w"]
    assert [(q["mfx_code"], q["mfx_reason"]) for q in wide] == [
        ("malformed_row", 'row has 7 fields, header has 6; fields past the header: ["x"]')
    ]
    assert summary["input_rows"] == 2


# --- 5. determinism ------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_future_reasons_state_the_reading_and_the_window_never_a_distance(
    tmp_path: Path, fast: bool
) -> None:
    rows = [
        row(ts="1796203186000", code="timestamp_in_future"),  # ms, a year ahead
        row(ts="1700000000000", ident="b", code="timestamp_in_future"),  # ms, two years back
        row(ts=str(NOW + 86_400), ident="c", code="timestamp_in_future"),  # s, a day ahead
    ]
    _, quarantined, _ = run(to_csv(CODED, rows), tmp_path / "1", fast=fast)
    window = "outside the accepted window 2025-10-20T16:00:00Z to 2025-11-24T17:00:00Z"
    assert [r["mfx_reason"] for r in quarantined] == [
        f"timestamp 1796203186000 read as milliseconds is 2026-12-02T09:19:46Z, {window}",
        f"timestamp 1700000000000 read as milliseconds is 2023-11-14T22:13:20Z, {window}",
        f"timestamp {NOW + 86_400} read as seconds is 2025-11-25T16:00:00Z, {window}",
    ]
    again = run(to_csv(CODED, rows), tmp_path / "2", fast=fast)
    assert again[1] == quarantined  # byte-identical outputs: see the files themselves
    first = {p.name: p.read_bytes() for p in (tmp_path / "1").iterdir()}
    assert first == again[2]


def test_validation_messages_are_dates_not_distances() -> None:
    index = MeterIndex(METERS)
    payload: dict[str, object] = {"stripe_customer_id": "c", "value": "1"}
    ahead = UsageRecord(1, "a", NOW + 3600, "api_requests", dict(payload))
    problem = validate_record(ahead, index, NOW)
    assert problem is not None and problem.message == (
        "timestamp 1764003600 (2025-11-24T17:00:00Z) is after 2025-11-24T16:05:00Z, "
        "5 minutes past the reference time"
    )
    old = UsageRecord(1, "a", NOW - 40 * 86_400, "api_requests", dict(payload))
    problem = validate_record(old, index, NOW)
    assert problem is not None and problem.message == (
        "timestamp 1760544000 (2025-10-15T16:00:00Z) is before 2025-10-20T16:00:00Z, "
        "35 days before the reference time"
    )


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
def test_a_number_json_does_not_have_never_reaches_an_output(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """A row holding `NaN` (or `Infinity`, or `1e999`) beside a correctable timestamp was
    corrected and written with `NaN` in it: a corrected file Stripe cannot parse, and a
    quarantined row's record PostgreSQL's JSON column refuses. It is quarantined as the
    malformed row it is; every output is strict JSON."""
    rows = [
        b'{"identifier": "n", "timestamp": 1764000000000, "event_name": "api_requests", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": 1, "note": NaN}}',
        b'{"identifier": "i", "timestamp": 1764000000000, "event_name": "api_requests", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": Infinity}}',
        b'{"identifier": "e", "timestamp": 1764000000000, "event_name": "api_requests", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": 1, "note": 1e999}}',
        b'{"identifier": "g", "timestamp": 1764000000000, "event_name": "api_requests", '
        b'"payload": {"stripe_customer_id": "cus_1", "value": 1, "note": 1.5}}',
    ]
    result = _remediate_json(tmp_path, fmt, rows, rejected=True)
    assert (result.summary["corrected"], result.summary["quarantined"]) == (1, 3)

    def strict(text: str) -> Any:
        def refuse(token: str) -> None:
            raise AssertionError(f"{token} in an output")

        return json.loads(text, parse_constant=refuse)

    outputs = result.summary["outputs"]
    texts = {
        kind: [Path(path).read_text(encoding="utf-8") for path in outputs[kind]]
        for kind in ("corrected", "quarantine")
    }
    if fmt is FileFormat.JSON:
        corrected = [row for text in texts["corrected"] for row in strict(text)]
        quarantined = [row for text in texts["quarantine"] for row in strict(text)]
    else:
        corrected = [strict(line) for text in texts["corrected"] for line in text.splitlines()]
        quarantined = [strict(line) for text in texts["quarantine"] for line in text.splitlines()]
    assert [row["identifier"] for row in corrected] == ["g-mfx1"]
    assert corrected[0]["payload"]["note"] == 1.5
    where = "line" if fmt is FileFormat.JSONL else "element"
    assert [(row["mfx_code"], row["mfx_reason"]) for row in quarantined] == [
        ("malformed_row", f"{where} holds NaN, which is not a JSON number"),
        ("malformed_row", f"{where} holds Infinity, which is not a JSON number"),
        ("malformed_row", f"{where} holds the number 1e999, past the range of a float"),
    ]
    assert [row["raw"] for row in quarantined] == [row.decode() for row in rows[:3]]
    for line in Path(outputs["audit"]).read_text(encoding="utf-8").splitlines():
        strict(line)


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
def test_a_row_of_the_wrong_shape_is_quarantined_as_it_came(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """A payload that is not an object was quarantined as `{}`, its value gone; an identifier
    or event name that is an object, a list or a boolean was written as Python's spelling of
    it (`"{'n': 'api_requests'}"`, `True-mfx1`), and an identifier list read as text passed as
    valid. Each is
    a malformed row whose quarantine line and stored record hold the value as it came."""
    ok = {
        "identifier": "ok",
        "timestamp": NOW * 1000,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": "1"},
        "error_code": "timestamp_in_future",
    }
    odd: dict[str, dict[str, Any]] = {
        "p1": {"payload": "abc"},
        "p2": {"payload": [1, {"a": 2}]},
        "p3": {"payload": 7},
        "e1": {"event_name": {"n": "api_requests"}},
        "e2": {"event_name": ["api_requests"]},
        "i1": {"identifier": ["a", 1]},
        "i2": {"identifier": {"k": "v"}},
        "i3": {"identifier": True},  # written `True-mfx1`: Python's text of it
        "e3": {"event_name": False},
    }
    reasons = {
        "p1": "payload is a JSON string, not an object",
        "p2": "payload is a JSON list, not an object",
        "p3": "payload is a JSON number, not an object",
        "e1": "event_name is a JSON object, not text",
        "e2": "event_name is a JSON list, not text",
        "i1": "identifier is a JSON list, not text",
        "i2": "identifier is a JSON object, not text",
        "i3": "identifier is a JSON boolean, not text",
        "e3": "event_name is a JSON boolean, not text",
    }
    rows = [ok]
    for name, change in odd.items():
        row = {key: value for key, value in ok.items() if key != "error_code"}
        rows.append({**row, "identifier": name, **change})
    stored: list[Any] = []
    result = _remediate_json(
        tmp_path,
        fmt,
        [json.dumps(row).encode() for row in rows],
        on_audit=lambda corrections, quarantined: stored.extend(quarantined),
    )
    assert (result.summary["corrected"], result.summary["quarantined"]) == (1, len(odd))
    (path,) = result.summary["outputs"]["quarantine"]
    text = Path(path).read_text(encoding="utf-8")
    written = (
        json.loads(text) if fmt is FileFormat.JSON else list(map(json.loads, text.split("\n")[:-1]))
    )
    expected = [
        {**row, "mfx_code": "malformed_row", "mfx_reason": reasons[name]}
        for name, row in zip(odd, rows[1:], strict=True)
    ]
    assert written == expected
    assert [json.loads(row.record) for row in stored] == expected
    assert [(row.code, row.mfx_code, row.reason) for row in stored] == [
        ("malformed_row", "malformed_row", reasons[name]) for name in odd
    ]


def _remediate_json(tmp_path: Path, fmt: FileFormat, rows: list[bytes], **options: Any) -> Any:
    """`rows` (JSON objects' texts) as a JSON array or JSON Lines file, remediated."""
    data = b"[" + b",\n".join(rows) + b"]" if fmt is FileFormat.JSON else b"\n".join(rows)
    return remediate(
        read_records(io.BytesIO(data), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        **options,
    )


def test_a_quarantine_file_fed_back_keeps_its_values_and_its_notes_once(tmp_path: Path) -> None:
    """A quarantine file edited and fed back in carries our `mfx_code` and `mfx_reason`
    columns: the new quarantine file wrote them twice (a header our own reader refuses), and
    the corrected file carried the stale notes. They are our notes, not the row's: read as
    the JSON readers read `mfx_` keys (not at all), written once, fresh. A column named
    `payload_` (no key after the prefix) is the row's own column: its value was written out
    as empty."""
    header = [*CODED, "payload_", "mfx_code", "mfx_reason"]
    rows = [
        ["a1", str(NOW * 1000), "api_requests", "cus_1", "5", "timestamp_in_future"],
        ["a2", str(NOW), "api_requests", "cus_1", "NaN", "meter_event_invalid_value"],
    ]
    rows = [[*row, f"own{n}", "stale_code", "stale reason"] for n, row in enumerate(rows)]
    summary, _ = both_paths(to_csv(header, rows), tmp_path)
    assert (summary["corrected"], summary["quarantined"]) == (1, 1)
    (corrected_path,) = summary["outputs"]["corrected"]
    with open(corrected_path, newline="") as handle:
        corrected = list(csv.reader(handle))
    assert corrected == [
        [*HEADER, "payload_"],
        ["a1-mfx1", str(NOW), "api_requests", "cus_1", "5", "own0"],
    ]
    (quarantine_path,) = summary["outputs"]["quarantine"]
    with open(quarantine_path, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == [*HEADER, "payload_", "mfx_code", "mfx_reason"]
    assert written[1][:6] == ["a2", str(NOW), "api_requests", "cus_1", "NaN", "own1"]
    assert written[1][6] == "meter_event_invalid_value" and "'NaN'" in written[1][7]
    with open(quarantine_path, "rb") as handle:  # and it reads back
        again = list(read_records(handle, FileFormat.CSV))
    assert [(r.identifier, r.extra) for r in again] == [("a2", {"payload_": "own1"})]
    doubled = to_csv([*header, "mfx_code", "mfx_reason"], [[*rows[1], "old", "older"]])
    assert [r.extra for r in read_records(io.BytesIO(doubled), FileFormat.CSV)] == [
        {"payload_": "own1"}
    ]  # a file written before this fix reads too


def test_unnamed_columns_keep_their_own_values(tmp_path: Path) -> None:
    """A spreadsheet export often ends its header with empty names (trailing commas). Two or
    more unnamed columns holding different cells were merged: the row's extra columns are
    keyed by name, both were named '', and both were written with the last one's cell."""
    header = [*CODED, "", "note", ""]
    rows = [
        ["a1", str(NOW * 1000), "api_requests", "cus_1", "5", "timestamp_in_future", "x", "n", "y"],
        ["a2", str(NOW), "api_requests", "cus_1", "NaN", "meter_event_invalid_value", "p", "", ""],
    ]
    summary, _ = both_paths(to_csv(header, rows), tmp_path)
    (corrected_path,) = summary["outputs"]["corrected"]
    with open(corrected_path, newline="") as handle:
        corrected = list(csv.reader(handle))
    assert corrected == [
        [*HEADER, "", "note", ""],
        ["a1-mfx1", str(NOW), "api_requests", "cus_1", "5", "x", "n", "y"],
    ]
    (quarantine_path,) = summary["outputs"]["quarantine"]
    with open(quarantine_path, newline="") as handle:
        written = list(csv.reader(handle))
    assert written[0] == [*HEADER, "", "note", "", "mfx_code", "mfx_reason"]
    assert written[1][:8] == ["a2", str(NOW), "api_requests", "cus_1", "NaN", "p", "", ""]
    with open(quarantine_path, "rb") as handle:  # and it reads back with the cells apart
        (again,) = list(read_records(handle, FileFormat.CSV))
    assert sorted(again.extra.values()) == ["", "", "p"]


def test_a_file_of_error_columns_only_writes_its_quarantine_header_once(tmp_path: Path) -> None:
    """Rows with no column to write (a file of error columns only, read without the plan that
    names the usage columns) are quarantined under one header: the writer took its empty list
    of columns for a header not yet written and wrote it again before every row."""
    data = to_csv(["message", "error_code"], [["", "x"], ["1", "no_meter"], ["2", ""]])
    summary, quarantined = both_paths(data, tmp_path)
    assert summary["quarantined"] == 3
    (path,) = summary["outputs"]["quarantine"]
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "mfx_code,mfx_reason" and len(lines) == 4
    assert [row["mfx_code"] for row in quarantined] == ["no_meter", "no_meter", "no_meter"]
