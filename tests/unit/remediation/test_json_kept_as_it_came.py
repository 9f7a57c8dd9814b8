"""JSON rows kept as they came: a number's text (`-0`), a null, a number where text belongs,
and the end of a JSON Lines line, through `remediate` (its files and the rows it hands the
service to store), held to the README. Each test failed on the code before its fix (the
docstring says what went wrong)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from remediation import jsonnumbers
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.outcomes import QuarantinedRow
from remediation.rules import Rules

NOW = 1_764_000_000  # 2025-11-24T16:00:00Z
METERS = [Meter("m1", "api_requests")]
INVALID = {"code": "meter_event_invalid_value", "message": "rejected"}
FORMATS = [FileFormat.JSONL, FileFormat.JSON]


def _row(identifier: object, value: str = '"1,234"', **fields: str) -> str:
    """A failed row's JSON text, each field's JSON text as given (so `-0` stays `-0`)."""
    texts = {
        "identifier": json.dumps(identifier),
        "timestamp": str(NOW - 3600),
        "event_name": '"api_requests"',
        "payload": '{"stripe_customer_id":"cus_1","value":' + value + "}",
        **fields,
        "error": json.dumps(INVALID, separators=(",", ":")),
    }
    return "{" + ",".join(f'"{key}":{text}' for key, text in texts.items()) + "}"


def _remediate(tmp_path: Path, fmt: FileFormat, rows: list[str]) -> dict[str, Any]:
    """`rows` as a JSON Lines file or a JSON array, remediated: the corrected and quarantine
    files' texts (one row each, as written), the summary, the rows stored for the service."""
    data = "[\n" + ",\n".join(rows) + "\n]\n" if fmt is FileFormat.JSON else "\n".join(rows)
    stored: list[QuarantinedRow] = []
    result = remediate(
        read_records(io.BytesIO(data.encode()), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path / fmt.value,
        on_audit=lambda corrections, quarantined: stored.extend(quarantined),
    )
    found: dict[str, Any] = {"summary": result.summary, "stored": stored}
    for kind in ("corrected", "quarantine"):
        texts = [Path(path).read_text("utf-8") for path in result.summary["outputs"][kind]]
        found[kind] = [line for text in texts for line in _written_rows(text, fmt)]
    return found


def _written_rows(text: str, fmt: FileFormat) -> list[str]:
    """The rows of an output file as their texts (a JSON array's elements, one a line)."""
    lines = text.splitlines()
    if fmt is FileFormat.JSON:
        lines = [line.removesuffix(",") for line in lines if line not in ("[", "]")]
    return [line for line in lines if line]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_json_integer_minus_zero_keeps_its_text(tmp_path: Path, fmt: FileFormat) -> None:
    """README: "A JSON number keeps the text it had in the file through corrected and
    quarantine files, the audit, the stored quarantined rows ...: it changes only under a
    rule, with an audit line."

    What happened: the JSON integer `-0` (a value, a timestamp, a key of the row's own) was
    read by `json` as Python's int 0 and written back `0`, with no audit line: in the
    quarantine file, the stored quarantined row and the corrected file alike (a value `-0`
    Stripe refused was quarantined as "value 0 is already a plain number")."""
    plain = [_row(f"p{n}", value=str(n + 1)) for n in range(12)]  # layouts learned first
    rows = [
        *plain,
        _row("z1", value="-0"),  # `12.0` -> `12`: `-0` -> `0`, under the rule
        _row("z2", timestamp="-0"),
        _row("z3", batch="-0"),  # corrected for its value: its other key as it came
        _row("z4", value='"x"', batch="-0", note='"a -0 in text"'),
    ]
    found = _remediate(tmp_path, fmt, rows)
    quarantined = {json.loads(line)["identifier"]: line for line in found["quarantine"]}
    assert '"timestamp":-0,' in quarantined["z2"], quarantined["z2"]
    assert '"batch":-0,"note":"a -0 in text"' in quarantined["z4"], quarantined["z4"]
    stored = {row.identifier: row.record for row in found["stored"]}
    assert '"timestamp":-0,' in stored["z2"] and '"batch":-0,' in stored["z4"]
    corrected = {json.loads(line)["identifier"]: line for line in found["corrected"]}
    assert '"batch":-0' in corrected["z3-mfx1"], corrected["z3-mfx1"]
    assert '"value":0}' in corrected["z1-mfx1"]
    (changed,) = [line for line in _audit_lines(found) if '"identifier": "z1"' in line]
    assert '"before": -0, "after": 0' in changed, changed


def _audit_lines(found: dict[str, Any]) -> list[str]:
    return Path(found["summary"]["outputs"]["audit"]).read_text("utf-8").splitlines()


def test_a_stored_row_read_back_keeps_minus_zero() -> None:
    """README: a JSON number keeps its text through "the stored quarantined rows (and the
    admin API, its CSV download and the dashboard that show them)": the database's JSON
    columns are read with `jsonnumbers.loads` and shown with `jsonnumbers.dumps`.

    What happened: `-0` read back was Python's 0, shown and re-run as `0`."""
    record = '{"identifier":"z1","timestamp":-0,"payload":{"value":-0,"n":[-0,1]},"x":-0.5}'
    assert jsonnumbers.dumps(jsonnumbers.loads(record)) == record
    assert jsonnumbers.loads(record.encode())["timestamp"] == 0  # still the number 0
    assert jsonnumbers.dumps_as(jsonnumbers.loads("[-0]"), (", ", ": ")) == "[-0]"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_quarantined_row_keeps_its_nulls(tmp_path: Path, fmt: FileFormat) -> None:
    """README, "Bounded input": a row of the wrong shape is "a malformed row, each value
    quarantined as it came, never `{}` or Python's text of it"; a quarantined row is the
    row as it came, with its code and reason.

    What happened: a row quarantined with `"payload": null` was written to the quarantine
    file (and stored) with `"payload":{}`; with `"timestamp": null` or `"event_name": null`
    the key was gone from the quarantined row."""
    rows = {
        "n1": _row("n1", payload="null"),
        "n2": _row("n2", value='"x"', timestamp="null"),
        "n3": _row("n3", event_name="null"),
        "n4": _row("n4", value='"x"', timestamp="null", event_name="null", payload="null"),
    }
    found = _remediate(tmp_path, fmt, [*rows.values(), _row("ok", timestamp="null")])
    assert found["summary"]["quarantined"] == len(rows)
    written = {json.loads(line)["identifier"]: json.loads(line) for line in found["quarantine"]}
    stored = {row.identifier: json.loads(row.record) for row in found["stored"]}
    for name, text in rows.items():
        came = {key: value for key, value in json.loads(text).items() if key != "error"}
        for kept in (written[name], stored[name]):
            assert {k: v for k, v in kept.items() if not k.startswith("mfx_")} == came, name
            assert list(kept)[:4] == ["identifier", "timestamp", "event_name", "payload"]
    (corrected,) = found["corrected"]  # sent to Stripe as before: no timestamp (its default)
    assert json.loads(corrected) == {
        "identifier": "ok-mfx1",
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": "1234"},
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_number_where_text_belongs_is_quarantined_as_the_number(
    tmp_path: Path, fmt: FileFormat
) -> None:
    """README, "Bounded input": "an identifier or event name that is an object, a list or a
    boolean: a malformed row, each value quarantined as it came, never ... Python's text of
    it"; a quarantined row is kept as it came.

    What happened: `"identifier": 5` (a JSON number) came back as `"identifier":"5"` in the
    quarantined row. A corrected row is sent to Stripe, whose identifier is text: there it is
    the text `"6-mfx1"`, as before."""
    rows = [
        _row(5, value='"x"'),  # quarantined: its value is no number
        _row(6),  # corrected
        _row("e1", value='"x"', event_name="7"),
        *[_row(n) for n in range(100, 110)],  # a layout of number identifiers, then more
        _row(110, value='"x"'),
    ]
    found = _remediate(tmp_path, fmt, rows)
    quarantined = [json.loads(line) for line in found["quarantine"]]
    assert [row["identifier"] for row in quarantined] == [5, "e1", 110]
    assert quarantined[1]["event_name"] == 7
    assert [json.loads(row.record)["identifier"] for row in found["stored"]] == [5, "e1", 110]
    assert [row.identifier for row in found["stored"]] == ["5", "e1", "110"]  # a text column
    corrected = [json.loads(line)["identifier"] for line in found["corrected"]]
    assert corrected == ["6-mfx1", *[f"{n}-mfx1" for n in range(100, 110)]]


NBSP, IDEOGRAPHIC_SPACE = "\u00a0", "\u3000"


def test_a_json_lines_line_is_trimmed_of_json_whitespace_only(tmp_path: Path) -> None:
    """README, "Bounded input": a line that is not JSON is quarantined "as written" ("the
    line or element is quarantined as written"); JSON's whitespace is space, tab, line feed
    and carriage return (RFC 8259), so only those surround a JSON Lines value.

    What happened: lines were trimmed with `str.strip()`, which also takes NBSP (U+00A0),
    U+3000 and other Unicode spaces off a line's ends: a broken line ending in them was
    quarantined without them, a line that is JSON followed by an NBSP was read as JSON (and
    sent on), and a line holding only an NBSP was skipped as blank, no row in any output."""
    good = _row("g1")
    broken = '{"identifier":"b1","note":"ends in spaces' + NBSP + IDEOGRAPHIC_SPACE
    lines = [" \t" + good + "\t \r", broken, _row("t1") + NBSP, NBSP]
    data = ("\n".join(lines) + "\n").encode()
    result = remediate(
        read_records(io.BytesIO(data), FileFormat.JSONL),
        source="in.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=tmp_path,
    )
    assert (result.summary["input_rows"], result.summary["corrected"]) == (4, 1)
    (quarantine,) = result.summary["outputs"]["quarantine"]
    kept = [json.loads(line) for line in Path(quarantine).read_text("utf-8").splitlines()]
    assert [row["raw"] for row in kept] == [broken, _row("t1") + NBSP, NBSP]
    assert {row["mfx_code"] for row in kept} == {"malformed_row"}
