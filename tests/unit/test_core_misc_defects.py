"""Control characters nested in a row or in its other fields; derived identifiers that crafted
originals made collide through the hashed form."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from remediation.csvlayouts import CsvLayout
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.identifiers import Identifiers, Lineage, derived_identifier
from remediation.lineage import reserved_originals
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import Rules
from remediation.validation import MeterIndex, validate_record

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]


# --- control characters anywhere in a row ---------------------------------------------------


def usage(identifier: str, **fields: Any) -> dict[str, Any]:
    payload = {"stripe_customer_id": "cus_1", "value": "5", **fields.pop("payload", {})}
    return {
        "identifier": identifier,
        "timestamp": NOW,
        "event_name": "api_requests",
        "payload": payload,
        **fields,
    }


# identifier -> (the row's other fields, the reason it is quarantined with)
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "list": (
        {"payload": {"d": ["\u0000"]}},
        "payload value 'd' at [0] '\\x00' holds a control character: U+0000 at position 1",
    ),
    "dict": (
        {"payload": {"d": {"k": "a\u2028"}}},
        "payload value 'd' at [\"k\"] 'a\\u2028' holds a control character: U+2028 at position 2",
    ),
    "deep": (
        {"payload": {"d": {"k": [1, {"m": "ok", "n": "x\u007f"}]}}},
        "payload value 'd' at [\"k\"][1][\"n\"] 'x\\x7f' holds a control character: U+007F at "
        "position 2",
    ),
    "nested-key": (
        {"payload": {"d": {"k\u0001": "v"}}},
        "payload value 'd' key at [\"k\\u0001\"] 'k\\x01' holds a control character: U+0001 at "
        "position 2",
    ),
}


# A row's other fields are not sent to Stripe (written to a corrected file as they came): a
# line break in a note is no reason to hold the row's usage back
OTHER_FIELDS = {"note": "line\nbreak", "meta": {"tags": ["ok", "\u2029"]}, "no\u0000te": "x"}


def hostile_rows() -> list[dict[str, Any]]:
    rows = [usage("clean", payload={"d": ["a", {"k": "b"}]}, **OTHER_FIELDS)]
    return rows + [usage(identifier, **fields) for identifier, (fields, _) in HOSTILE.items()]


def lines_of(rows: list[dict[str, Any]], fmt: FileFormat) -> bytes:
    if fmt is FileFormat.JSON:
        return json.dumps(rows).encode()
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def quarantined(paths: list[str], fmt: FileFormat) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if fmt is FileFormat.JSON:
            rows += json.loads(text)
        else:
            # not splitlines(): a line may hold a raw U+2028 (valid JSON), which it splits at
            rows += [json.loads(line) for line in text.split("\n") if line]
    return rows


@pytest.mark.parametrize("fmt", [FileFormat.JSONL, FileFormat.JSON])
@pytest.mark.parametrize("code", [None, "timestamp_in_future"])
@pytest.mark.parametrize("as_records", [False, True])
def test_control_characters_nested_in_a_payload_never_go_out(
    tmp_path: Path, fmt: FileFormat, code: str | None, as_records: bool
) -> None:
    """`str()` of a nested payload value escapes its control characters, so they passed.
    Every such row is quarantined with
    the code and the kind of reason a top-level text holding one gets, read as columns or as
    records, reported under a code or not."""
    rows = hostile_rows()
    if code is not None:  # reported in milliseconds: the rule corrects, the check must stop
        rows[1:] = [{**row, "timestamp": NOW * 1000, "error_code": code} for row in rows[1:]]
    records = read_records(io.BytesIO(lines_of(rows, fmt)), fmt)
    result = remediate(
        list(records) if as_records else records,
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        rejected=True,
    )
    summary = result.summary
    assert (summary["valid"], summary["quarantined"]) == (1, len(HOSTILE))
    (corrected,) = quarantined(summary["outputs"]["corrected"], fmt)
    assert corrected["identifier"] == "clean-mfx1"
    assert {key: corrected[key] for key in OTHER_FIELDS} == OTHER_FIELDS
    got = {
        row["identifier"]: (row["mfx_code"], row["mfx_reason"])
        for row in quarantined(summary["outputs"]["quarantine"], fmt)
    }
    expected_code = code or "control_character"
    assert got == {ident: (expected_code, reason) for ident, (_, reason) in HOSTILE.items()}


@pytest.mark.parametrize("as_records", [False, True])
def test_a_csv_column_of_its_own_holding_a_line_break_goes_out_as_it_came(
    tmp_path: Path, as_records: bool
) -> None:
    """Stripe reads the usage columns only: a note with a line break is written as it came."""
    header = ["identifier", "timestamp", "event_name", "payload_stripe_customer_id"]
    header += ["payload_value", "note", "error_code"]
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(header)
    out.writerow(["ok", NOW, "api_requests", "cus_1", "5", "fine", ""])
    out.writerow(["noted", NOW, "api_requests", "cus_1", "5", "a\nb\tc", ""])
    records = read_records(io.BytesIO(buffer.getvalue().encode()), FileFormat.CSV)
    result = remediate(
        list(records) if as_records else records,
        source="in.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        columns=CsvLayout.from_header(header).columns(),
        rejected=True,
    )
    assert result.summary["outputs"]["quarantine"] == []
    (kept,) = result.summary["outputs"]["corrected"]
    with open(kept, newline="") as handle:
        rows = [(row["identifier"], row["note"]) for row in csv.DictReader(handle)]
    assert rows == [("ok-mfx1", "fine"), ("noted-mfx1", "a\nb\tc")]


def test_validate_record_sees_nested_control_characters() -> None:
    index = MeterIndex(METERS)
    record = UsageRecord(
        1, "a", NOW, "api_requests", {"stripe_customer_id": "cus_1", "value": "5", "d": ["\x00"]}
    )
    problem = validate_record(record, index, NOW)
    assert problem is not None and problem.code == "control_character"
    record.payload["d"] = ["fine", {"k": 1}]
    record.extra = {"n": {"x": "\x1f"}, "note": "a\nb"}  # not sent: not checked
    assert validate_record(record, index, NOW) is None


# --- derived identifiers: no two originals share one ----------------------------------------


def sha(text: str, salt: str = "") -> str:
    return hashlib.sha256(text.encode() + (b"\x00" + salt.encode() if salt else b"")).hexdigest()


def run_ids(originals: list[str], generation: int = 1) -> list[str]:
    """Derived identifiers of one input holding `originals` (the reserved set as runs make it)."""
    ids = Identifiers("usage.csv", generation, Lineage(), keep=False)
    pairs = [(original, row) for row, original in enumerate(originals, 1)]
    reserved = reserved_originals(pairs, ids)
    run = Identifiers("usage.csv", generation, Lineage({}, reserved), keep=False)
    return [str(run.new(original, row)) for original, row in pairs]


def assert_one_each(originals: list[str], derived: list[str]) -> None:
    by_original = dict(zip(originals, derived, strict=True))
    assert len(set(by_original.values())) == len(by_original)  # one per original
    assert not set(derived) & set(originals)  # never another row's own identifier
    assert all(len(identifier) <= 100 for identifier in derived)


LONG = "x" * 97  # too long for the plain form: goes out hashed
# its hashed form without the suffix: a plain original that spelt the same identifier
STEM = f"{'x' * 80}-{sha(LONG)[:12]}"
# two 100-character originals with one first 80 characters and one 12 hex digits of sha256
# (found by a birthday search over 2^25 such texts)
TWIN_A, TWIN_B = ("p" * 80 + f"{n:020d}" for n in (3837155, 13613443))


@pytest.mark.parametrize(
    "originals",
    [
        [LONG, STEM],
        [STEM, LONG],
        # a short original goes out hashed when its plain form is another row's original ...
        ["abc", "abc-mfx1", f"abc-{sha('abc')[:12]}"],
        [f"abc-{sha('abc')[:12]}", "abc-mfx1", "abc"],
        # ... and one shaped like a hashed stem of such an original, one level further
        ["a-mfx1", f"a-{'0' * 12}", f"a-{'0' * 12}-{sha('a-' + '0' * 12)[:12]}"],
        [f"a-{'0' * 12}-{sha('a-' + '0' * 12)[:12]}", f"a-{'0' * 12}", "a-mfx1"],
        # the hashed form is an original of the input itself
        ["abc", "abc-mfx1", f"abc-{sha('abc')[:12]}-mfx1"],
        [TWIN_A, TWIN_B],
        [TWIN_B, TWIN_A, TWIN_B],
    ],
)
def test_crafted_originals_never_share_a_derived_identifier(originals: list[str]) -> None:
    derived = run_ids(originals)
    assert_one_each(originals, derived)
    assert run_ids(originals) == derived  # deterministic
    for original, identifier in zip(originals, derived, strict=True):
        assert identifier == derived[originals.index(original)]  # one original, one identifier


def test_the_forms_chosen_when_the_first_is_taken() -> None:
    assert sha(TWIN_A)[:12] == sha(TWIN_B)[:12] and TWIN_A[:80] == TWIN_B[:80]
    first = f"{'p' * 80}-{sha(TWIN_A)[:12]}-mfx1"
    assert run_ids([TWIN_A, TWIN_B, TWIN_A]) == [
        first,
        f"{'p' * 80}-{sha(TWIN_B, '1')[:12]}-mfx1",  # the next form, from sha256(original, NUL, 1)
        first,
    ]
    # the stem of a long original is no plain identifier any more: it goes out hashed
    assert run_ids([STEM]) == [f"{STEM[:80]}-{sha(STEM)[:12]}-mfx1"]
    assert derived_identifier(STEM, 1) == f"{STEM[:80]}-{sha(STEM)[:12]}-mfx1"
    # a hashed form that is an original of the input is passed over like a plain one
    held = f"abc-{sha('abc')[:12]}-mfx1"
    assert run_ids(["abc", "abc-mfx1", held])[0] == f"abc-{sha('abc', '1')[:12]}-mfx1"
    # identifiers shaped so, but that no original's hashed form can be, stay plain
    uuid = "550e8400-e29b-41d4-a716-446655440000"
    assert run_ids([uuid, f"{'x' * 79}-{sha('q')[:12]}"]) == [
        f"{uuid}-mfx1",
        f"{'x' * 79}-{sha('q')[:12]}-mfx1",
    ]


@pytest.mark.parametrize("as_records", [False, True])
@pytest.mark.parametrize(
    "originals", [[LONG, STEM], [STEM, LONG], [TWIN_A, TWIN_B], ["abc", "abc-mfx1", STEM]]
)
def test_a_corrected_file_never_holds_one_identifier_twice(
    tmp_path: Path, originals: list[str], as_records: bool
) -> None:
    """Two rejected rows of one failed-records file went out under one identifier: Stripe
    took one, deduplicated the other (its usage lost)."""
    rows = [
        {**usage(original, timestamp=NOW * 1000), "error_code": "timestamp_in_future"}
        for original in originals
    ]
    records = read_records(io.BytesIO(lines_of(rows, FileFormat.JSONL)), FileFormat.JSONL)
    ids = Identifiers("in.jsonl", 1, Lineage(), keep=False)
    reserved = reserved_originals(((o, n) for n, o in enumerate(originals, 1)), ids)
    result = remediate(
        list(records) if as_records else records,
        source="in.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
        rejected=True,
        lineage=Lineage({}, reserved),
    )
    written = quarantined(result.summary["outputs"]["corrected"], FileFormat.JSONL)
    assert len(written) == len(originals)
    assert all(row["timestamp"] == NOW for row in written)
    assert_one_each(originals, [row["identifier"] for row in written])
