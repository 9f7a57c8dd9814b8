"""Timestamp rules through `meterfix remediate`, found by a probe of the rules: reasons that
named a window holding the row or a year past 9999, and audit lines that did not record the
field as the row held it. Through the real console script, CSV and JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.test_cli_rule_edges import remediate

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


def _json_row(identifier: str, timestamp: str, code: str) -> str:
    """A JSON Lines row whose timestamp is written as `timestamp` (JSON text, as given)."""
    return (
        f'{{"identifier":"{identifier}","timestamp":{timestamp},"event_name":"api_requests",'
        f'"payload":{{"stripe_customer_id":"cus_demo_alice","value":5}},"error_code":"{code}"}}\n'
    )


def _reasons(found: dict[str, Any]) -> dict[str, str]:
    return {row["identifier"]: row["mfx_reason"] for row in found["quarantine"]}


def test_with_clamp_skew_off_the_window_is_stripes_five_minutes(tmp_path: Path) -> None:
    """`clamp_skew` turned off, `future_skew_seconds = 3600`: a row ten minutes ahead was
    refused "outside the accepted window … to 17:00", a window that held it (16:10), and a
    millisecond one was read as seconds first. Nothing is clamped: the window ends at
    Stripe's five minutes, and the millisecond row says what its own value was read as."""
    rules = '[policy]\nfuture_skew_seconds = 3600\ndisabled_rules = ["clamp_skew"]\n'
    text = HEADER + "c1,1764000600,api_requests,cus_demo_alice,5,timestamp_in_future\n"
    text += "c2,1764000600000,api_requests,cus_demo_alice,5,timestamp_in_future\n"
    found = remediate(tmp_path, "f.csv", text, rules=rules)
    window = "outside the accepted window 2025-10-20T16:00:00Z to 2025-11-24T16:05:00Z"
    assert _reasons(found) == {
        "c1": f"timestamp 1764000600 read as seconds is 2025-11-24T16:10:00Z, {window}",
        "c2": f"timestamp 1764000600000 read as milliseconds is 2025-11-24T16:10:00Z, {window}",
    }
    # on, the skew's hour is the window: c1 is clamped, c2 read as milliseconds and clamped
    on = remediate(tmp_path, "g.csv", text, rules="[policy]\nfuture_skew_seconds = 3600\n")
    assert [row["timestamp"] for row in on["corrected"]] == ["1764000000", "1764000000"]


def test_a_timestamp_found_too_old_says_what_it_was_read_as(tmp_path: Path) -> None:
    """A millisecond timestamp Stripe found too old said "(after year 9999)", and an ISO-8601
    one no date at all: each says the date it was read as."""
    text = HEADER + "p1,1760000000000,api_requests,cus_demo_alice,5,timestamp_too_far_in_past\n"
    text += "p2,2025-10-01T00:00:00Z,api_requests,cus_demo_alice,5,timestamp_too_far_in_past\n"
    text += "p3,1760000000,api_requests,cus_demo_alice,5,timestamp_too_far_in_past\n"
    found = remediate(tmp_path, "p.csv", text)
    never = "never move usage into another billing period; quarantined for review"
    assert _reasons(found) == {
        "p1": "timestamp 1760000000000 read as milliseconds is 2025-10-09T08:53:20Z: Stripe "
        f"found it more than 35 days old; {never}",
        "p2": "timestamp '2025-10-01T00:00:00Z' read as ISO-8601 is 2025-10-01T00:00:00Z: "
        f"Stripe found it more than 35 days old; {never}",
        "p3": "timestamp 1760000000 (2025-10-09T08:53:20Z): Stripe found it more than 35 days "
        f"old; {never}",
    }


def test_a_timestamps_audit_line_records_the_field_as_the_row_held_it(tmp_path: Path) -> None:
    """The audit recorded ` 1764000000000 ` as the number 1764000000000, the JSON `1.764e12`
    and `1764000000000.0` as 1764000000000 and the JSON text `"1764001800 "` as a number:
    what the row held was changed with no line saying so. The first change's `before` is the
    field as the row held it (a number's own digits, in a CSV cell or JSON text, as before:
    the number)."""
    csv_text = HEADER + "b1, 1764000000000 ,api_requests,cus_demo_alice,5,timestamp_in_future\n"
    csv_text += "b2,1764000000000,api_requests,cus_demo_alice,5,timestamp_in_future\n"
    found = remediate(tmp_path, "b.csv", csv_text)
    lines = [(line["identifier"], line["before"]) for line in found["audit"][:-1]]
    assert lines == [("b1", " 1764000000000 "), ("b2", 1764000000000)]

    rows = [
        ("j1", "1.764e12"),
        ("j2", "1764000000000.0"),
        ("j3", '"1764001800 "'),
        ("j4", '"1764000000000"'),
        ("j5", "1764000000000"),
    ]
    text = "".join(_json_row(i, t, "timestamp_in_future") for i, t in rows)
    found = remediate(tmp_path, "b.jsonl", text)
    audit = (tmp_path / "out-b.jsonl").glob("*.audit.jsonl")
    written = next(audit).read_text().splitlines()[:-1]
    befores = [line.split('"before": ', 1)[1].split(', "after"', 1)[0] for line in written]
    # each as the file spelt it, but for a number's own digits as JSON text: the number
    assert befores == [
        "1.764e12",
        "1764000000000.0",
        '"1764001800 "',
        "1764000000000",
        "1764000000000",
    ]
    assert [json.loads(line)["rule"] for line in written] == [
        "timestamp_ms_to_s",
        "timestamp_ms_to_s",
        "clamp_skew",
        "timestamp_ms_to_s",
        "timestamp_ms_to_s",
    ]
    assert len(found["corrected"]) == 5


def test_a_timestamp_only_our_validation_found_too_old_is_not_said_to_be_stripes_finding(
    tmp_path: Path,
) -> None:
    """A row Stripe refused for its value (`1,234`) whose timestamp our validation found 46
    days old, and the same row in a usage file Stripe never read: both were quarantined
    "Stripe found it more than 35 days old". Each says it is before the reference time's
    window; a row Stripe did refuse as too old still says Stripe found it so."""
    old = "1760000000"  # 2025-10-09T08:53:20Z, 46 days before NOW
    text = HEADER + f'm1,{old},api_requests,cus_demo_alice,"1,234",meter_event_invalid_value\n'
    text += f"m2,{old},api_requests,cus_demo_alice,5,timestamp_too_far_in_past\n"
    ours = (
        "timestamp 1760000000 (2025-10-09T08:53:20Z) is before 2025-10-20T16:00:00Z, more "
        "than 35 days before the reference time; never move usage into another billing "
        "period; quarantined for review"
    )
    stripes = (
        "timestamp 1760000000 (2025-10-09T08:53:20Z): Stripe found it more than 35 days old; "
        "never move usage into another billing period; quarantined for review"
    )
    assert _reasons(remediate(tmp_path, "f.csv", text)) == {"m1": ours, "m2": stripes}
    usage = HEADER.replace(",error_code", "") + f"u1,{old},api_requests,cus_demo_alice,5\n"
    assert _reasons(remediate(tmp_path, "u.csv", usage)) == {"u1": ours}
    jsonl = _json_row("j1", old, "meter_event_invalid_value").replace(
        '"value":5', '"value":"1,234"'
    )
    assert _reasons(remediate(tmp_path, "j.jsonl", jsonl)) == {"j1": ours}
