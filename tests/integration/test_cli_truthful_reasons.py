"""What a quarantined row's reason says is true of the row (README "Remediation rules")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_cli_ambiguous_readings import _by_identifier, _remediate


def _row(identifier: str, code: str, payload: dict[str, Any], event: str = "api_requests") -> str:
    row = {"identifier": identifier, "timestamp": 1764000000, "event_name": event}
    return json.dumps({**row, "payload": payload, "error": {"code": code}})


def _reasons(tmp_path: Path, rows: list[str]) -> dict[str, str]:
    summary, audit = _remediate(tmp_path, "rows.jsonl", "\n".join(rows) + "\n")
    assert summary["quarantined"] == len(rows)
    return {key: line["reason"] for key, line in _by_identifier(audit).items()}


def test_a_code_that_is_not_true_of_the_row_is_not_said_of_it(tmp_path: Path) -> None:
    both = {"stripe_customer_id": "cus_Q1a2B3c4", "value": "5"}
    reasons = _reasons(
        tmp_path,
        [
            _row("a", "archived_meter", both),
            _row("b", "meter_event_value_not_found", both),
            _row("c", "meter_event_no_customer_defined", both),
        ],
    )
    assert reasons["a"].startswith("meter 'api_requests' is active in the meters read")
    assert "archived and has no" not in reasons["a"]
    assert reasons["b"].startswith("value key 'value' holds '5'")
    assert reasons["c"].startswith("customer key 'stripe_customer_id' holds 'cus_Q1a2B3c4'")


def test_a_plain_value_past_the_decimal_places_is_said_to_have_too_many_digits(
    tmp_path: Path,
) -> None:
    values = ["1.1234567890123", "0.0000000000001", "5." + "0" * 37 + "1", "1e-13"]
    rows = [
        _row(
            f"v{at}",
            "meter_event_invalid_value",
            {"stripe_customer_id": "cus_Q1a2B3c4", "value": v},
        )
        for at, v in enumerate(values)
    ]
    reasons = _reasons(tmp_path, rows)
    places = [13, 13, 38, 13]
    for at, count in enumerate(places):
        assert f"({count} decimal places) has too many digits" in reasons[f"v{at}"]


def test_an_empty_json_text_is_named_as_an_empty_csv_cell_is(tmp_path: Path) -> None:
    payload = {"stripe_customer_id": "cus_Q1a2B3c4", "value": ""}
    reasons = _reasons(tmp_path, [_row("e", "meter_event_invalid_value", payload)])
    assert reasons["e"] == "value (empty) is not a number"


def test_a_trimmed_customer_goes_out_only_as_what_the_untrimmed_text_would(
    tmp_path: Path,
) -> None:
    texts = {"k1": " ACME-42 ", "k2": "ACME-42", "k3": "acme-42 ", "k4": " cus_Q1a2B3c4 "}
    rows = [
        _row(key, "meter_event_customer_not_found", {"stripe_customer_id": text, "value": "5"})
        for key, text in texts.items()
    ]
    summary, audit = _remediate(tmp_path, "customers.jsonl", "\n".join(rows) + "\n")
    lines = _by_identifier(audit)
    assert (summary["corrected"], summary["quarantined"]) == (2, 2)
    for key in ("k1", "k2"):
        assert lines[key]["kind"] == "quarantine"
        assert lines[key]["reason"] == (
            f"customer {texts[key]!r} is not in the customer map and has no unique match"
        )
    assert (lines["k3"]["rule"], lines["k3"]["after"]) == ("map_customer", "cus_Q1a2B3c4")
    assert (lines["k4"]["rule"], lines["k4"]["after"]) == ("trim_customer", "cus_Q1a2B3c4")


def test_an_event_name_that_names_an_active_meter_is_sent_again_as_it_was(
    tmp_path: Path,
) -> None:
    payload = {"stripe_customer_id": "cus_Q1a2B3c4", "value": "5"}
    rows = [
        _row("n1", "no_meter", payload),
        _row("n2", "no_meter", payload, event="API-Requests"),
        _row("n3", "no_meter", {**payload, "value": "1,234"}),
    ]
    summary, audit = _remediate(tmp_path, "names.jsonl", "\n".join(rows) + "\n")
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (1, 2, 0)
    lines = _by_identifier(audit)
    assert (lines["n1"]["kind"], lines["n1"]["rule"]) == ("resend", "resend_unchanged")
    assert (lines["n2"]["rule"], lines["n2"]["after"]) == ("match_event_name", "api_requests")
    assert (lines["n3"]["rule"], lines["n3"]["after"]) == ("normalize_value", "1234")
    [corrected] = summary["outputs"]["corrected"]
    sent = [json.loads(line) for line in Path(corrected).read_text().splitlines()]
    assert [(row["identifier"], row["event_name"]) for row in sent] == [
        ("n1-mfx1", "api_requests"),
        ("n2-mfx1", "api_requests"),
        ("n3-mfx1", "api_requests"),
    ]
