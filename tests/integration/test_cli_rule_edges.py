"""Edges of the remediation rules, each through the real CLI (`meterfix remediate`), held to
the README's rules table: what an alias may hold, and units read against the
accepted window."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli_remediate import meterfix

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
NOW = "1764000000"  # 2025-11-24T16:00:00Z


def remediate(
    tmp_path: Path, name: str, text: str, *, rules: str | None = None, meters: Path | None = None
) -> dict[str, Any]:
    """Run `meterfix remediate` on `text` saved as `name`; the summary plus the rows of its
    corrected and quarantine outputs (parsed) and its audit lines."""
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    rules_path = EXAMPLES / "rules.toml"
    if rules is not None:
        rules_path = tmp_path / "rules.toml"
        rules_path.write_text(rules)
    out = tmp_path / f"out-{name}"
    proc = meterfix(
        "remediate",
        str(source),
        "--out",
        str(out),
        "--meters",
        str(meters or EXAMPLES / "meters.json"),
        "--rules",
        str(rules_path),
        "--now",
        NOW,
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    found: dict[str, Any] = {"summary": summary}
    for kind in ("corrected", "quarantine"):
        found[kind] = [row for path in summary["outputs"][kind] for row in _rows(Path(path))]
    audit = summary["outputs"]["audit"]
    found["audit"] = [json.loads(line) for line in Path(audit).read_text().splitlines()]
    return found


def _rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    loaded: list[dict[str, Any]] = json.loads(text)
    return loaded


def _jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(row["identifier"]): row for row in rows}


# --- meter_event_no_customer_defined: a top-level alias holding null / an object / false --------


def _no_customer(identifier: str, **top: object) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "timestamp": 1764000000,
        "event_name": "api_requests",
        **top,
        "payload": {"value": 1},
        "error": {"code": "meter_event_no_customer_defined"},
    }


def test_customer_alias_holding_null_is_no_candidate(tmp_path: Path) -> None:
    """README (rules table): "an alias holding a blank, `""`, spaces or `null`, is no
    candidate, here and for the customer and dimension aliases". A top-level `customer_id:
    null` was read as the customer text "None" and the row re-sent with customer "None"."""
    found = remediate(tmp_path, "nulls.jsonl", _jsonl(_no_customer("h1", customer_id=None)))
    assert found["corrected"] == [], found["corrected"]
    (row,) = found["quarantine"]
    assert row["mfx_code"] == "meter_event_no_customer_defined"


def test_customer_alias_null_beside_a_real_one_fills_it(tmp_path: Path) -> None:
    """The same rule: `null` beside `customer: "cus_9"` is no second candidate, exactly as
    `""` beside it is not (that row is corrected). Both rows must be decided alike."""
    text = _jsonl(
        _no_customer("h2", customer_id=None, customer="cus_9"),
        _no_customer("h4", customer_id="", customer="cus_9"),
    )
    found = remediate(tmp_path, "pair.jsonl", text)
    corrected = _by_id(found["corrected"])
    assert set(corrected) == {"h2-mfx1", "h4-mfx1"}, found["quarantine"]
    assert corrected["h2-mfx1"]["payload"]["stripe_customer_id"] == "cus_9"


def test_a_blank_customer_the_alias_fills_is_audited_as_the_row_held_it(tmp_path: Path) -> None:
    """README: every correction's before and after. A customer key holding spaces, filled
    from a top-level alias, was audited as `before: null`: the row could not be told back
    from the audit. JSON's `""`, a CSV's empty cell, stays no value."""

    def row(identifier: str, held: str) -> dict[str, Any]:
        line = _no_customer(identifier, customer="cus_9")
        line["payload"]["stripe_customer_id"] = held
        return line

    found = remediate(tmp_path, "blank.jsonl", _jsonl(row("s1", "  "), row("s2", "")))
    assert set(_by_id(found["corrected"])) == {"s1-mfx1", "s2-mfx1"}
    fills = {
        a["identifier"]: (a["before"], a["after"])
        for a in found["audit"]
        if a.get("rule") == "fill_customer_key"
    }
    assert fills == {"s1": ("  ", "cus_9"), "s2": (None, "cus_9")}


def test_customer_alias_of_wrong_shape_is_never_python_text(tmp_path: Path) -> None:
    """README (Bounded input): "no JSON row of the wrong shape read as something else ...
    never `{}` or Python's text of it". A top-level `customer_id` holding an object or
    `false` became the customer "{'a': 1}" / "False" and was sent."""
    text = _jsonl(
        _no_customer("h5", customer_id={"a": 1}),
        _no_customer("h6", customer_id=False),
    )
    found = remediate(tmp_path, "shapes.jsonl", text)
    sent = [row["payload"].get("stripe_customer_id") for row in found["corrected"]]
    assert sent == [], sent
    assert {row["identifier"] for row in found["quarantine"]} == {"h5", "h6"}


# --- timestamp_in_future: units read against the skew, not against Stripe's own 5 minutes -------


def test_millisecond_timestamp_two_minutes_ahead_is_converted_with_skew_zero(
    tmp_path: Path,
) -> None:
    """The rules table (README, docs/architecture.md): ms/µs/ns → s; ISO-8601 → s; a small
    skew → clamped to now. With `future_skew_seconds = 0` (no clamping), a time 2
    minutes ahead is within what Stripe takes (5 minutes, `validation.MAX_FUTURE_SECONDS`):
    its ISO spelling was converted and sent, but the same instant in ms or µs was
    quarantined, with a reason saying 16:02 is "outside the accepted window ... to 16:05"."""
    text = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        "s1,1764000120000,api_requests,cus_1,1,timestamp_in_future\n"
        "s3,2025-11-24T16:02:00Z,api_requests,cus_1,1,timestamp_in_future\n"
        "s4,1764000120000000,api_requests,cus_1,1,timestamp_in_future\n"
    )
    found = remediate(tmp_path, "skew.csv", text, rules="[policy]\nfuture_skew_seconds = 0\n")
    assert [row["mfx_reason"] for row in found["quarantine"]] == []
    corrected = _by_id(found["corrected"])
    assert {k: row["timestamp"] for k, row in corrected.items()} == {
        "s1-mfx1": "1764000120",
        "s3-mfx1": "1764000120",
        "s4-mfx1": "1764000120",
    }


def test_a_row_the_clock_has_caught_up_with_is_sent_as_it_came(tmp_path: Path) -> None:
    """Stripe refused these rows for being over five minutes ahead; by the run's clock (the
    CLI's default `--now`, read minutes later) they are within what Stripe takes. Each was
    quarantined "reported as timestamp_in_future but there is nothing to correct", never
    billed. They go out as they came (`valid`, a `resend` line), in CSV and JSON Lines; a
    row still past the window is clamped or quarantined as before."""
    now = int(NOW)
    rows = {"ahead": now + 1, "edge": now + 300, "behind": now - 3600, "far": now + 301}
    text = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    text += "".join(f"{k},{t},api_requests,cus_1,5,timestamp_in_future\n" for k, t in rows.items())
    jsonl = _jsonl(
        *(
            {
                "identifier": k,
                "timestamp": t,
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": "cus_1", "value": 5},
                "error": {"code": "timestamp_in_future"},
            }
            for k, t in rows.items()
        )
    )
    for name, content in (("future.csv", text), ("future.jsonl", jsonl)):
        found = remediate(tmp_path, name, content)
        assert found["quarantine"] == []
        sent = {str(row["identifier"]): int(row["timestamp"]) for row in found["corrected"]}
        assert sent == {
            "ahead-mfx1": now + 1,
            "edge-mfx1": now + 300,
            "behind-mfx1": now - 3600,
            "far-mfx1": now,  # clamped: within the skew, past Stripe's window
        }
        summary = found["summary"]
        assert (summary["valid"], summary["corrected"]) == (3, 1), summary
        kinds = {line["identifier"]: (line["kind"], line["rule"]) for line in found["audit"][:-1]}
        assert kinds == {
            "ahead": ("resend", "resend_unchanged"),
            "edge": ("resend", "resend_unchanged"),
            "behind": ("resend", "resend_unchanged"),
            "far": ("correction", "clamp_skew"),
        }


# --- meter_event_value_too_many_digits: the reason of a value rounding pushes past 20 digits -----


def test_value_rounded_past_the_digit_limit_is_quarantined_with_a_plain_reason(
    tmp_path: Path,
) -> None:
    """README (Bounded input): a value at most 20 integer digits; a reason states the fact.
    `99999999999999999999.6` has 20 integer digits, rounded to 0 places it has 21: the row
    was quarantined with `value Decimal('100000000000000000000') has 21 integer digits`,
    Python's text of a number the file never held. The rounding beside it still happens."""
    text = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        "d1,1764000000,api_requests,cus_1,99999999999999999999.6,"
        "meter_event_value_too_many_digits\n"
        "d2,1764000000,api_requests,cus_1,5.55,meter_event_value_too_many_digits\n"
    )
    rules = "[policy]\nround_too_many_digits = true\nvalue_precision = 0\n"
    found = remediate(tmp_path, "digits.csv", text, rules=rules)
    assert [(r["identifier"], r["payload_value"]) for r in found["corrected"]] == [("d2-mfx1", "6")]
    (row,) = found["quarantine"]
    assert row["identifier"] == "d1"
    assert row["payload_value"] == "99999999999999999999.6"
    assert row["mfx_reason"] == (
        "value '99999999999999999999.6' rounded to 0 decimal places has 21 integer digits; "
        "at most 20 allowed"
    )


def test_a_value_of_too_many_places_that_are_zeros_is_written_shorter_without_rounding(
    tmp_path: Path,
) -> None:
    """README's rules table: `12.0` -> `12` is no rounding, only the same value written
    plainly. A value Stripe refused for too many digits whose extra places are all zeros
    (`2.50000000000000000`) was quarantined "policy round_too_many_digits is off", as if its
    value had to change: it goes out as `2.5` (rule `normalize_value`, its audit line), in a
    CSV, a JSON text and a JSON number alike, and with a row of a usage file (no code) whose
    text has 13 places. A value that needs rounding still waits for the policy."""
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    code = "meter_event_value_too_many_digits"
    text = (
        header + f"z1,{NOW},api_requests,cus_1,2.50000000000000000,{code}\n"
        f"z2,{NOW},api_requests,cus_1,-0.0000000000000,{code}\n"
        f"z3,{NOW},api_requests,cus_1,1.0000000000000,\n"
        f"z4,{NOW},api_requests,cus_1,2.1234567890123,{code}\n"
    )
    found = remediate(tmp_path, "zeros.csv", text)
    sent = [(r["identifier"], r["payload_value"]) for r in found["corrected"]]
    assert sent == [("z1-mfx1", "2.5"), ("z2-mfx1", "0"), ("z3-mfx1", "1")]
    lines = [
        (a["identifier"], a["rule"], a["before"], a["after"])
        for a in found["audit"]
        if a["kind"] == "correction"
    ]
    assert ("z1", "normalize_value", "2.50000000000000000", "2.5") in lines
    assert ("z3", "normalize_value", "1.0000000000000", "1") in lines
    (held,) = found["quarantine"]
    assert held["identifier"] == "z4"
    assert held["mfx_reason"].endswith("policy round_too_many_digits is off")

    def row(identifier: str, value: object) -> dict[str, Any]:
        payload = {"value": value, "stripe_customer_id": "cus_1"}
        return {
            "identifier": identifier,
            "timestamp": int(NOW),
            "event_name": "api_requests",
            "payload": payload,
            "error_code": code,
        }

    lines_text = _jsonl(row("j1", "2.50000000000000000")) + (
        '{"identifier": "j2", "timestamp": NOW, "event_name": "api_requests", "payload": '
        '{"value": 2.50000000000000000, "stripe_customer_id": "cus_1"}, "error_code": "CODE"}\n'
    ).replace("NOW", NOW).replace("CODE", code)
    found = remediate(tmp_path, "zeros.jsonl", lines_text)
    assert [(r["identifier"], r["payload"]["value"]) for r in found["corrected"]] == [
        ("j1-mfx1", "2.5"),
        ("j2-mfx1", 2.5),
    ]
    corrected = (tmp_path / "out-zeros.jsonl" / "zeros.corrected.r1.jsonl").read_text()
    assert '"value":2.5,' in corrected  # the JSON number stays a number
    assert found["quarantine"] == []


def test_a_row_refused_for_a_reason_no_code_stands_for_is_unclassified_never_resent(
    tmp_path: Path,
) -> None:
    """DESIGN: a row Stripe refused with a code we do not know, that passes our validation, is
    quarantined `unclassified` (re-sending it blind could fail again or bill wrongly). A row
    whose only reason was a message no code stands for went out as it came under a new
    identifier (`d1-mfx1`): refused as a duplicate of a row Stripe had billed, it was billed
    twice. It is quarantined, the message in its reason; a message that names a code is read
    as that code, as before."""
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,"
    text = (
        header + "error_code,error_message\n"
        f'd1,{NOW},api_requests,cus_1,5,,"An event with identifier d1 already exists"\n'
        f"d2,{NOW},api_requests,cus_1,5,weird_code,\n"
        f"d3,{NOW}000,api_requests,cus_1,5,,Timestamp is in the future\n"
    )
    found = remediate(tmp_path, "unread.csv", text)
    assert [r["identifier"] for r in found["corrected"]] == ["d3-mfx1"]
    held = _by_id(found["quarantine"])
    assert sorted(held) == ["d1", "d2"]
    assert held["d1"]["mfx_code"] == "unclassified"
    assert held["d1"]["mfx_reason"] == (
        "unknown error message 'An event with identifier d1 already exis'… (42 characters) "
        "and the row passes our validation (unclassified)"
    )
    assert held["d2"]["mfx_code"] == "unclassified"
    summary = found["summary"]
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (0, 1, 2)
    assert summary["by_code"]["unclassified"] == {"corrected": 0, "quarantined": 1}
    assert not [
        a for a in found["audit"] if a.get("identifier") == "d1" and a["kind"] != "quarantine"
    ]


# --- a JSON number keeps its text: `-0` ----------------------------------------------------------


# --- timestamp_too_far_in_past: the reason says what the timestamp was read as ------------------


def test_too_far_in_past_reason_says_what_the_timestamp_was_read_as(tmp_path: Path) -> None:
    """README (Bounded input): "a timestamp's reason says what it was read as ... as dates".
    A row Stripe found too old was quarantined with the same fixed text whatever its time
    ("never move usage into another billing period; quarantined for review"): nothing told
    the reader which period it belonged to. One that is no time at all says so too."""
    text = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        "p1,1760544000,api_requests,cus_1,5,timestamp_too_far_in_past\n"
        "p2,1760544000000,api_requests,cus_1,5,timestamp_too_far_in_past\n"
        "p3,last week,api_requests,cus_1,5,timestamp_too_far_in_past\n"
    )
    found = remediate(tmp_path, "past.csv", text)
    assert found["corrected"] == []
    never = "never move usage into another billing period; quarantined for review"
    old = "more than 35 days old"
    assert {row["identifier"]: row["mfx_reason"] for row in found["quarantine"]} == {
        "p1": f"timestamp 1760544000 (2025-10-15T16:00:00Z): Stripe found it {old}; {never}",
        # it said "(after year 9999)": a time in milliseconds is read as one
        "p2": f"timestamp 1760544000000 read as milliseconds is 2025-10-15T16:00:00Z: Stripe "
        f"found it {old}; {never}",
        "p3": f"timestamp 'last week': {never}",
    }


# --- malformed_row: a row with more fields than its header is kept in full ----------------------


def test_a_row_wider_than_its_header_keeps_every_cell_in_quarantine(tmp_path: Path) -> None:
    """README: the quarantine holds rows "in full", and bad input "loses nothing". An
    unquoted `1,234` value shifts a row one field past its header: its last cell (`hello`,
    the note) was dropped from the quarantine file and the stored row, with nothing saying
    what it had held. The row keeps its cells under their columns as read; the ones past
    the header are in the reason, as a JSON list. A short row is padded, as before."""
    text = (
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,note\n"
        'm1,1764000000,api_requests,cus_1,1,234,"hello, world",x\n'
        "m2,1764000000,api_requests\n"
    )
    found = remediate(tmp_path, "wide.csv", text)
    assert found["corrected"] == []
    quarantined = _by_id(found["quarantine"])
    wide = quarantined["m1"]
    assert (wide["payload_value"], wide["note"]) == ("1", "234")
    assert wide["mfx_code"] == "malformed_row"
    assert wide["mfx_reason"] == (
        'row has 8 fields, header has 6; fields past the header: ["hello, world", "x"]'
    )
    assert quarantined["m2"]["mfx_reason"] == "row has 3 fields, header has 6"
    reasons = [line["reason"] for line in found["audit"] if line["kind"] == "quarantine"]
    assert wide["mfx_reason"] in reasons


def test_a_csv_whose_error_columns_are_all_empty_is_a_usage_file(tmp_path: Path) -> None:
    """A usage CSV exported with `error_code,error_message` columns left empty was taken for
    a failed-records file: its valid rows (billed, maybe) were written to the corrected file
    as `ok-1-mfx1` and would be sent again, while the same rows as JSON were not. A file is
    a failed-records file when a row carries an error; the rows Stripe would take are
    counted valid and written nowhere, a row our validation refuses is still corrected."""
    header = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,"
    header += "error_code,error_message\n"
    ok, ms = f"ok-1,{NOW},api_requests,cus_demo_alice,5", f"ms-1,{NOW}000,api_requests,x,5"
    found = remediate(tmp_path, "usage.csv", f"{header}{ok},,\n{ms},,\n")
    summary = found["summary"]
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (1, 1, 0)
    assert [row["identifier"] for row in found["corrected"]] == ["ms-1-mfx1"]
    # one row naming its error makes the file a failed-records file: every row re-sent
    failed = remediate(tmp_path, "failed.csv", f"{header}{ok},,\n{ms},timestamp_in_future,\n")
    assert (failed["summary"]["valid"], failed["summary"]["corrected"]) == (1, 1)
    assert sorted(row["identifier"] for row in failed["corrected"]) == ["ms-1-mfx1", "ok-1-mfx1"]


def test_a_failed_row_of_no_event_name_is_not_given_the_default(tmp_path: Path) -> None:
    """`default_event_name` (for a CSV header without the column) filled an empty cell of a
    failed-records row (`no_meter`): billed to that meter, the audit saying `api_requests`
    -> `api_requests`. The row names no meter: quarantined, as without the default."""
    text = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
    text += "f1,1764000000,,cus_1,5,no_meter\n"
    found = remediate(
        tmp_path, "f.csv", text, rules='[policy]\ndefault_event_name = "api_requests"\n'
    )
    assert found["corrected"] == []
    [row] = found["quarantine"]
    assert (row["event_name"], row["mfx_code"]) == ("", "no_meter")
    assert row["mfx_reason"] == "no single active meter matches event_name ''"


def test_the_event_name_a_header_lacked_is_in_each_rows_audit_and_the_repairs_in_the_summary(
    tmp_path: Path,
) -> None:
    """A failed-records CSV delimited by `;`, its timestamp under `time` and no event_name
    column: its rows went out with the default event name and the audit held no line of it
    (the meter a row was billed to named by us, recorded nowhere); the summary said nothing
    of the file's repairs. Each row that goes out has the line, first among its changes; the
    repairs are in the summary and in the audit file's summary line."""
    text = "identifier;time;payload_stripe_customer_id;payload_value;error_code\n"
    text += "r1;1764000000000;cus_1;5;timestamp_in_future\nr2;1764000000;cus_1;abc;\n"
    found = remediate(
        tmp_path, "r.csv", text, rules='[policy]\ndefault_event_name = "api_requests"\n'
    )
    summary = found["summary"]
    assert (summary["corrected"], summary["quarantined"], summary["corrections"]) == (1, 1, 2)
    assert summary["repairs"] == [
        "delimiter ';' read as CSV",
        "header aliases renamed: 'time' -> 'timestamp'",
        "event_name filled with 'api_requests'",
    ]
    [row] = found["corrected"]
    assert (row["identifier"], row["event_name"], row["timestamp"]) == (
        "r1-mfx1",
        "api_requests",
        "1764000000",
    )
    changes = [
        (line["row"], line["code"], line["rule"], line["field"], line["before"], line["after"])
        for line in found["audit"]
        if line["kind"] == "correction"
    ]
    assert changes == [
        (1, "timestamp_in_future", "default_event_name", "event_name", None, "api_requests"),
        (1, "timestamp_in_future", "timestamp_ms_to_s", "timestamp", 1764000000000, 1764000000),
    ]
    assert found["audit"][-1]["repairs"] == summary["repairs"]


@pytest.mark.parametrize("end", ["", "\r"], ids=["no-line-end", "lone-cr-is-one"])
def test_a_file_cut_off_inside_a_quoted_value_is_not_billed_what_was_left(
    tmp_path: Path, end: str
) -> None:
    """A failed-records file cut off in its last value (`"600` became `"6`, the file ending
    there): csv.reader closed the field at the end of the file and the row was corrected
    and billed 6. A quote left open anywhere else made the row's field hold a line break
    (refused, "a quote left open?"); at the end of the file it does the same now."""
    text = "identifier,timestamp,event_name,payload_stripe_customer_id,error_code,payload_value\n"
    text += f'c1,1764000000000,api_requests,cus_1,timestamp_in_future,"6{end}'
    found = remediate(tmp_path, "cut.csv", text)
    assert found["corrected"] == []
    [row] = found["quarantine"]
    assert row["identifier"] == "c1" and row["mfx_reason"].endswith(
        "(a line break: a quote left open?)"
    )


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_nel_in_a_value_never_cuts_a_written_line(tmp_path: Path, fmt: str) -> None:
    """U+0085 (NEL) was written raw in JSON outputs, where `str.splitlines()` (as for U+2028
    and U+2029, which were escaped) ends a line: a corrected row read back as two lines,
    neither JSON. It is written as the escape `\\u0085`: the same JSON."""
    rows = [
        {
            "identifier": "n1",
            "timestamp": 1764000000000,
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": "cus_1", "value": 5, "region": "eu\x85west"},
            "error_code": "timestamp_in_future",
        },
        {
            "identifier": "n2",
            "timestamp": 1764000000,
            "event_name": "nope",
            "payload": {"stripe_customer_id": "cus_1", "value": 5, "note": "a\x85b"},
            "error_code": "no_meter",
        },
    ]
    text = (
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if fmt == "jsonl"
        else json.dumps(rows, ensure_ascii=False)
    )
    found = remediate(tmp_path, f"n.{fmt}", text)
    summary = found["summary"]
    for kind in ("corrected", "quarantine"):
        [path] = summary["outputs"][kind]
        written = Path(path).read_text(encoding="utf-8")
        assert "\x85" not in written and "\\u0085" in written
        lines = [line for line in written.splitlines() if line.strip("[]")]
        assert len(lines) == 1, lines  # one row each, one line each
    [corrected] = found["corrected"]
    assert corrected["payload"]["region"] == "eu\x85west"
    [held] = found["quarantine"]
    assert held["payload"]["note"] == "a\x85b"
