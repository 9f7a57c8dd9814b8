"""The same failed rows as a CSV, as JSON Lines and as a JSON array are decided alike: the same
counts, the same corrected rows, the same quarantine codes and reasons, the same audit.

A JSON file may carry a timestamp or value as a JSON number where a CSV holds text; the rules
read both the same way (`5` and `"5"` are the same plain number). Known and deliberate
differences are left out of the rows: a JSON float timestamp (`1763996400.0` is read as
seconds, the text `"1763996400.0"` is not) and how a reason shows a number (`5` or `'5'`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from remediation.engine import remediate
from remediation.meters import Meter
from remediation.repair import plan_input, read_repaired
from remediation.rules import load_rules
from tests.fuzz import fuzz_settings

NOW = 1_764_000_000
HOUR_AGO = NOW - 3600
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "old", status="inactive"),  # successor api_requests: the same keys
    Meter("m3", "tokens", value_key="tokens"),
    Meter("m4", "tokens_v1", status="inactive"),  # successor tokens: another value key
    Meter("m5", "storage_gb", dimension_keys=("region",)),
]
RULES = load_rules(
    '[customers]\n"acme" = "cus_A"\n'
    '[meter_successors]\n"old" = "api_requests"\n"tokens_v1" = "tokens"\n'
    '[dimension_aliases]\nregion = ["zone", "area"]\n'
    "[policy]\nround_too_many_digits = true\nvalue_precision = 2\n"
)
CODES = st.sampled_from(
    ["timestamp_in_future", "meter_event_invalid_value", "no_meter", "archived_meter",
     "meter_event_customer_not_found", "timestamp_too_far_in_past", "odd", "field_too_long",
     "meter_event_value_too_many_digits", "meter_event_value_not_found",
     "meter_event_no_customer_defined", "missing_dimension_payload_keys",
     "meter_event_dimension_count_too_high"]
)  # fmt: skip
TIMESTAMPS = st.sampled_from(
    [str(HOUR_AGO), str(HOUR_AGO * 1000), str(NOW + 120), str(NOW + 3 * 86400),
     "2025-11-24T16:00:00Z", str(NOW - 40 * 86400), f"{HOUR_AGO}.0", "-3", "", "soon"]
)  # fmt: skip
EVENT_NAMES = st.sampled_from(
    ["api_requests", "API_REQUESTS", "Api_Requests", "old", "api-requests", " api_requests",
     "apirequests", "tokens", "tokens_v1", "Tokens", "storage_gb", "Storage-GB", "", "\x00"]
)  # fmt: skip
CUSTOMERS = st.sampled_from(["cus_1", "acme", "cus_A", "ACME", "", "x" * 101])
VALUES = st.sampled_from(
    ["5", "-3", "0", "1764000000000", "1,234", "1.5", "12.0", "1.50", "1 234", "1,234.5",
     "3.14159", "3.14", "0.001", "0.00001", "1.005",
     "1.234,5", "  8", "007", "1e3", "NaN", "", "9" * 25, "\u2028"]
)  # fmt: skip
IDENTIFIERS = st.one_of(
    st.integers(0, 3).map(lambda n: f"id{n}"),  # repeated within a file now and then
    st.integers(0, 3).map(lambda n: f"id{n}-mfx1"),
    st.integers(0, 3).map(lambda n: "i" * 95 + str(n)),  # derived would pass 100 characters
    st.just(""),  # none: `row-<hash of source and row>`
)
REGIONS = st.sampled_from(["eu", "", " EU ", "x" * 101])
# A file's columns: these three, some of the optional ones (payload keys as `payload_<key>`,
# `zone` a top-level one), then the error columns when it is a failed-records file.
FIRST = {"identifier": IDENTIFIERS, "timestamp": TIMESTAMPS, "event_name": EVENT_NAMES}
OPTIONAL = {
    "payload_stripe_customer_id": CUSTOMERS,
    "payload_customer_id": CUSTOMERS,
    "payload_value": VALUES,
    "payload_tokens": VALUES,
    "payload_amount": VALUES,
    "payload_region": REGIONS,
    "payload_zone": REGIONS,
    "zone": REGIONS,
}
ERRORS = {"error_code": CODES, "error_message": st.just("rejected")}
INTEGER = re.compile(r"-?[1-9][0-9]{0,15}")
DECIMAL = re.compile(r"-?[0-9]{1,6}\.[0-9]{1,4}")


@st.composite
def files(draw: st.DrawFn) -> tuple[list[str], list[dict[str, str]], bool]:
    """(columns, rows, whether it is a failed-records file)."""
    errors = draw(st.booleans())
    optional = draw(st.lists(st.sampled_from(sorted(OPTIONAL)), unique=True, max_size=5))
    cells = {**FIRST, **{name: OPTIONAL[name] for name in optional}, **(ERRORS if errors else {})}
    drawn = draw(st.lists(st.fixed_dictionaries(cells), min_size=1, max_size=6))
    # keys in the columns' order: a row with several faults is refused for the first, in
    # column order for a CSV and in key order for JSON
    return list(cells), [{name: row[name] for name in cells} for row in drawn], errors


def as_csv(columns: list[str], rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([row[name] for name in columns] for row in rows)
    return buffer.getvalue()


def json_lines(rows: list[dict[str, str]], numbers: bool) -> list[str]:
    """The rows as Stripe's JSON objects (`payload_<key>` in `payload`, `error_<key>` in
    `error`); with `numbers`, plain integers (and decimal values) as JSON numbers. An empty
    CSV cell is an absent key."""

    def number(name: str, text: str) -> object:
        if not numbers or name not in ("timestamp", "payload_value", "payload_tokens"):
            return text
        if INTEGER.fullmatch(text):
            return int(text)
        if name != "timestamp" and DECIMAL.fullmatch(text) and repr(float(text)) == text:
            return float(text)  # `1.5`, `12.0`; never `1.50`, which JSON would write `1.5`
        return text

    lines = []
    for row in rows:
        record: dict[str, Any] = {}
        for name, text in row.items():
            if text == "" and not name.startswith("error_"):
                continue
            group, _, key = name.partition("_")
            if group in ("payload", "error") and key:
                record.setdefault(group, {})[key] = number(name, text)
            else:
                record[name] = number(name, text)
        lines.append(json.dumps(record))
    return lines


def outcome(
    path: Path, rejected: bool, generation: int = 1, identifiers: str = "derive"
) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    """The run's summary and its output files as flat records of texts (CSV columns, JSON
    objects with `payload.*` and `error.*` flattened into `payload_*` / `error_*`)."""
    plan = plan_input(path, RULES)
    out = path.parent / f"out-{path.suffix[1:]}"
    with open(path, "rb") as stream:
        result = remediate(
            read_repaired(stream, plan, RULES),
            source="rows",
            fmt=plan.fmt,
            meters=METERS,
            rules=RULES,
            now=NOW,
            out_dir=out,
            columns=plan.columns or None,
            rejected=rejected,
            generation=generation,
            identifiers=identifiers,
        )
    summary = {k: v for k, v in result.summary.items() if k not in ("source", "outputs")}
    found: dict[str, list[dict[str, str]]] = {}
    for written in sorted(out.iterdir()):
        kind = "audit" if ".audit." in written.name else written.name.split(".")[1]
        with open(written, newline="", encoding="utf-8") as handle:
            text = handle.read()
        if written.suffix == ".csv":
            records: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(text, newline="")))
        elif written.suffix == ".jsonl":
            records = [json.loads(line) for line in text.split("\n") if line]
        else:
            records = json.loads(text)
        found.setdefault(kind, []).extend(flat(record) for record in records)
    # a CSV's rows of another payload layout go to a file of their own (`.layout2.csv`)
    for kind in ("corrected", "quarantine"):
        found.get(kind, []).sort(key=lambda record: json.dumps(record, sort_keys=True))
    return summary, found


def flat(record: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, held in record.items():
        if isinstance(held, dict) and key in ("payload", "error"):
            found.update({f"{key}_{inner}": shown(value) for inner, value in held.items()})
        elif held not in ("", None):
            found[key] = shown(held)
    return found


def shown(held: object) -> str:
    return held.replace("'", "") if isinstance(held, str) else json.dumps(held)


def changed(line: dict[str, str]) -> bool:
    """A correction changes what is sent again: a row sent unchanged is refused again, under
    a new identifier. One deliberate exception: an event name Stripe found no meter for that
    names an active meter now (`match_event_name`, the meter made after the row was sent) is
    sent again as it was."""
    if line["kind"] != "correction" or line["rule"] == "match_event_name":
        return True
    return line.get("before") != line.get("after")


@fuzz_settings(25)
@given(
    file=files(),
    numbers=st.booleans(),
    generation=st.integers(1, 3),
    identifiers=st.sampled_from(["derive", "keep"]),
)
@example(  # a JSON number Stripe refused as a value is not "corrected" to itself and re-sent
    file=(
        [*FIRST, "payload_stripe_customer_id", "payload_value", *ERRORS],
        [
            {"identifier": f"id{n}", "timestamp": str(HOUR_AGO), "event_name": "api_requests",
             "payload_stripe_customer_id": "cus_A", "payload_value": value,
             "error_code": "meter_event_invalid_value", "error_message": "rejected"}
            for n, value in enumerate(["5", "-3", "0", "12.0"])
        ],
        True,
    ),
    numbers=True,
    generation=1,
    identifiers="derive",
)  # fmt: skip
def test_fuzz_csv_json_lines_and_json_array_rows_are_decided_alike(
    file: tuple[list[str], list[dict[str, str]], bool],
    numbers: bool,
    generation: int,
    identifiers: str,
    tmp_path_factory: Any,
) -> None:
    """With error columns a failed-records file (every row was rejected); without, a usage
    file that may hold billed rows. Of any generation, identifiers derived or kept."""
    columns, rows, errors = file
    work = tmp_path_factory.mktemp("formats")
    (work / "rows.csv").write_text(as_csv(columns, rows), encoding="utf-8", newline="")
    lines = json_lines(rows, numbers)
    (work / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (work / "rows.json").write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    decided = outcome(work / "rows.csv", errors, generation, identifiers)
    assert outcome(work / "rows.jsonl", errors, generation, identifiers) == decided
    assert outcome(work / "rows.json", errors, generation, identifiers) == decided
    summary, outputs = decided
    assert summary["input_rows"] == len(rows)
    for line in outputs.get("audit", []):
        assert changed(line), line
    sent = summary["corrected"] + (summary["valid"] if errors else 0)
    assert sent == len(outputs.get("corrected", []))
    assert summary["quarantined"] == len(outputs.get("quarantine", []))
