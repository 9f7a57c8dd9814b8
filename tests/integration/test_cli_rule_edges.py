"""Edges of the remediation rules, each through the real CLI (`meterfix remediate`), held to
the README's rules table: what an alias may hold, and units read against the
accepted window."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tests.integration.test_cli_remediate import meterfix

EXAMPLES = Path(__file__).parent.parent.parent / "examples"
NOW = "1764000000"  # 2025-11-24T16:00:00Z


def remediate(tmp_path: Path, name: str, text: str, *, rules: str | None = None) -> dict[str, Any]:
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
        str(EXAMPLES / "meters.json"),
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


# --- meter_event_value_too_many_digits: the reason of a value rounding pushes past 20 digits -----


# --- a JSON number keeps its text: `-0` ----------------------------------------------------------


# --- timestamp_too_far_in_past: the reason says what the timestamp was read as ------------------
