"""The rules that move payload keys (`meter_event_value_not_found`, `meter_event_no_customer_
defined`, the dimension codes) at their edges, through `meterfix remediate`: a row already
holding an amount or a customer is never overwritten by an alias's (both named, the row
quarantined), a JSON `""`/`null` under a key is a CSV's empty cell, a CSV column under an
alias counts for the value as it does for the customer. Each test failed on the code before
(its docstring says what happened)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli_rule_edges import _jsonl, remediate

ROW = {"identifier": "a1", "timestamp": 1764000000, "event_name": "api_requests"}
HEADER = "identifier,timestamp,event_name"


def _one(tmp_path: Path, name: str, text: str, rules: str | None = None) -> dict[str, Any]:
    """The summary's counts and the one row's outcome: its corrected row, or its reason."""
    found = remediate(tmp_path, name, text, rules=rules)
    summary = found["summary"]
    rows = found["corrected"] + found["quarantine"]
    assert summary["input_rows"] == len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (
            {"stripe_customer_id": "cus_1", "value": 3, "amount": 5},
            "meter_event_value_not_found",
            "payload key 'value' holds 3 and alias 'amount' holds 5: which one is meant is "
            "not guessed",
        ),
        (
            {"stripe_customer_id": "cus_A", "customer_id": "cus_B", "value": 1},
            "meter_event_no_customer_defined",
            "payload key 'stripe_customer_id' holds 'cus_A' and alias 'customer_id' holds "
            "'cus_B': which one is meant is not guessed",
        ),
    ],
)
def test_an_alias_never_replaces_what_the_row_holds(
    tmp_path: Path, payload: dict[str, Any], code: str, reason: str
) -> None:
    """`value: 3` beside `amount: 5` was sent as 5, and `cus_A` beside `customer_id: cus_B`
    as cus_B; the audit said only "renamed amount to value": the 3 and cus_A were gone."""
    row = _one(tmp_path, "a.jsonl", _jsonl({**ROW, "payload": payload, "error": {"code": code}}))
    assert (row["mfx_code"], row["mfx_reason"]) == (code, reason)
    assert row["payload"] == payload


def test_a_top_level_customer_alias_never_replaces_the_payload_customer(tmp_path: Path) -> None:
    """CSV `customer_id,customer` (the first renamed to the meter's key by the header repair)
    billed the second, `cus_2`, audited as filled from nothing; JSON quarantined the row."""
    text = f"{HEADER},customer_id,customer,payload_value,error_code\n"
    text += "a1,1764000000,api_requests,cus_1,cus_2,5,meter_event_no_customer_defined\n"
    row = _one(tmp_path, "a.csv", text)
    assert row["mfx_reason"] == (
        "payload key 'stripe_customer_id' holds 'cus_1' and a top-level alias holds 'cus_2': "
        "which one is meant is not guessed"
    )
    payload = {"stripe_customer_id": "cus_A", "value": 5}
    json_row = {**ROW, "payload": payload, "customer": "cus_B"}
    quarantined = _one(
        tmp_path, "a.jsonl", _jsonl({**json_row, "error_code": "meter_event_no_customer_defined"})
    )
    assert "holds 'cus_A' and a top-level alias holds 'cus_B'" in quarantined["mfx_reason"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "a.jsonl",
            _jsonl(
                {
                    **ROW,
                    "payload": {"customer_id": "cus_A", "value": 1},
                    "customer": "cus_B",
                    "error": {"code": "meter_event_no_customer_defined"},
                }
            ),
        ),
        (
            "a.csv",
            f"{HEADER},payload_customer_id,customer,payload_value,error_code\n"
            "a1,1764000000,api_requests,cus_A,cus_B,1,meter_event_no_customer_defined\n",
        ),
    ],
)
def test_a_payload_alias_and_a_top_level_alias_naming_two_customers_are_both_named(
    tmp_path: Path, name: str, text: str
) -> None:
    """`payload.customer_id: cus_A` beside a top-level `customer: cus_B`: the row was sent to
    cus_A, audited as a rename, cus_B never named. One customer the two agree on is fine."""
    row = _one(tmp_path, name, text)
    assert row["mfx_code"] == "meter_event_no_customer_defined"
    reason = {
        # the CSV's `customer` column is under the meter's key once the header is repaired
        "a.csv": "payload key 'stripe_customer_id' holds 'cus_B' and alias 'customer_id' "
        "holds 'cus_A'",
        "a.jsonl": "payload key 'customer_id' holds 'cus_A' and a top-level alias holds 'cus_B'",
    }[name]
    assert row["mfx_reason"] == f"{reason}: which one is meant is not guessed"
    agreed = text.replace("cus_B", " cus_A ")
    row = _one(tmp_path, f"agreed-{name}", agreed)
    assert row["identifier"] == "a1-mfx1"
    customer = (
        row["payload"]["stripe_customer_id"]
        if "payload" in row
        else row["payload_stripe_customer_id"]
    )
    assert customer == "cus_A"


def test_a_value_under_a_csv_header_alias_is_the_value_rows_are_re_sent_with(
    tmp_path: Path,
) -> None:
    """A CSV column `amount` (renamed `payload_value` by the header repair): Stripe read the
    row without a value, but the row was quarantined as "no single aliased column", the
    quarantine file showing `payload_value=5` (a re-run refused it the same way). Customers
    under such a column were already filled so."""
    text = f"{HEADER},payload_stripe_customer_id,amount,error_code\n"
    text += "a1,1764000000,api_requests,cus_1,5,meter_event_value_not_found\n"
    found = remediate(tmp_path, "a.csv", text)
    [row] = found["corrected"]
    assert (row["identifier"], row["payload_value"]) == ("a1-mfx1", "5")
    [audit] = [a for a in found["audit"] if a.get("rule") == "rename_key"]
    assert (audit["field"], audit["before"], audit["after"]) == (
        "payload.amount",
        "amount",
        "value",
    )


def test_blank_json_keys_are_empty_cells_for_the_key_rules(tmp_path: Path) -> None:
    """A dimension `region: ""` beside its alias `reg: "eu"` was taken as present: the row was
    "corrected" with `region: ""` and `reg` dropped (`eu` lost); in CSV it got `region=eu`.
    A blank value beside `amount` dropped the amount as an unused key."""
    meters = [
        {
            "id": "m1",
            "event_name": "api_requests",
            "customer_mapping": {"event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
            "dimension_payload_keys": ["region"],
        }
    ]
    (tmp_path / "m.json").write_text(json.dumps(meters))
    rules = '[dimension_aliases]\nregion = ["reg"]\n'

    def run(name: str, payload: dict[str, Any], code: str) -> dict[str, Any]:
        row = {**ROW, "payload": payload, "error": {"code": code}}
        return remediate(tmp_path, name, _jsonl(row), rules=rules, meters=tmp_path / "m.json")

    payload = {"stripe_customer_id": "cus_1", "value": 1, "region": "", "reg": "eu"}
    [row] = run("d.jsonl", payload, "missing_dimension_payload_keys")["corrected"]
    assert row["payload"] == {"stripe_customer_id": "cus_1", "value": 1, "region": "eu"}
    payload = {"stripe_customer_id": "cus_1", "value": "", "amount": 5, "foo": "x", "region": "eu"}
    [row] = run("v.jsonl", payload, "meter_event_dimension_count_too_high")["quarantine"]
    assert row["payload"]["amount"] == 5 and "foo" in row["payload"]


def test_aliases_named_in_capitals_match(tmp_path: Path) -> None:
    """`[aliases] customer = ["UserID"]` never matched: keys are compared in lower case."""
    rules = '[aliases]\ncustomer = ["UserID"]\n'
    payload = {"UserID": "cus_1", "value": 1}
    code = "meter_event_no_customer_defined"
    found = remediate(
        tmp_path,
        "u.jsonl",
        _jsonl({**ROW, "payload": payload, "error": {"code": code}}),
        rules=rules,
    )
    [row] = found["corrected"]
    assert row["payload"] == {"stripe_customer_id": "cus_1", "value": 1}


@pytest.mark.parametrize(
    ("column", "code", "audit"),
    [
        ("customer_id", "meter_event_no_customer_defined", ("fill_customer_key", None, "cus_1")),
        ("amount", "meter_event_value_not_found", ("rename_key", "amount", "value")),
    ],
)
def test_rows_stripe_read_without_their_customer_or_amount_are_corrected(
    tmp_path: Path, column: str, code: str, audit: tuple[str, object, object]
) -> None:
    """A usage CSV (no error columns) naming its customer `customer_id` or its amount `amount`:
    Stripe read every row without one and refused it, but the repaired header put it under
    the meter's key and the rows were counted valid and written nowhere: their usage lost
    (the same rows as JSON Lines, the alias a top-level key, were corrected and re-sent)."""
    names = {"customer_id": "payload_value", "amount": "payload_stripe_customer_id"}
    cells = {"customer_id": "cus_1,5", "amount": "5,cus_1"}[column]
    text = f"{HEADER},{column},{names[column]}\na1,1764000000,api_requests,{cells}\n"
    found = remediate(tmp_path, "u.csv", text)
    summary = found["summary"]
    assert (summary["valid"], summary["corrected"], summary["by_code"]) == (
        0,
        1,
        {code: {"corrected": 1, "quarantined": 0}},
    )
    [row] = found["corrected"]
    assert (row["identifier"], row["payload_stripe_customer_id"], row["payload_value"]) == (
        "a1-mfx1",
        "cus_1",
        "5",
    )
    [change] = [a for a in found["audit"] if a["kind"] == "correction"]
    assert (change["rule"], change["before"], change["after"]) == audit


def test_a_reroute_fills_a_blank_json_key_from_its_alias_as_an_empty_cell(
    tmp_path: Path,
) -> None:
    """`Tokens` (no meter: the meter is `tokens`, its value key `tokens`) with `value: 5`
    beside `tokens: ""`: the CSV row went to `tokens` with 5, the JSON row was quarantined
    as "value '' is not a number" (the blank taken for the amount)."""
    meters = [
        {"id": "m1", "event_name": "tokens", "value_settings": {"event_payload_key": "tokens"}}
    ]
    (tmp_path / "m.json").write_text(json.dumps(meters))
    payload = {"stripe_customer_id": "cus_1", "value": 5, "tokens": ""}
    row = {**ROW, "event_name": "Tokens", "payload": payload, "error": {"code": "no_meter"}}
    found = remediate(tmp_path, "t.jsonl", _jsonl(row), rules="", meters=tmp_path / "m.json")
    [sent] = found["corrected"]
    assert (sent["event_name"], sent["payload"]) == (
        "tokens",
        {"stripe_customer_id": "cus_1", "tokens": 5},
    )


def test_two_amount_columns_holding_two_amounts_are_both_named(tmp_path: Path) -> None:
    """A usage CSV naming its amount twice, `amount` and `quantity` (both aliases of the
    value): the header repair renamed the first, and the row was corrected and billed 5,
    the 7 beside it never named. Now the row is quarantined naming both; columns that agree
    are one amount."""
    text = f"{HEADER},payload_stripe_customer_id,amount,quantity\n"
    text += "a1,1764000000,api_requests,cus_1,5,7\na2,1764000000,api_requests,cus_1,5,5\n"
    found = remediate(tmp_path, "aq.csv", text)
    [quarantined] = found["quarantine"]
    assert (quarantined["identifier"], quarantined["mfx_reason"]) == (
        "a1",
        "payload key 'value' holds '5' and a top-level alias holds '7': which one is meant "
        "is not guessed",
    )
    [corrected] = found["corrected"]
    assert (corrected["identifier"], corrected["payload_value"]) == ("a2-mfx1", "5")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_customer_filled_from_an_alias_is_mapped_when_the_map_names_it(
    tmp_path: Path, fmt: str
) -> None:
    """`customer_id: acme-42` filled the meter's customer key as `acme-42`, though
    `[customers]` maps it to `cus_A`: Stripe refused the row again (customer not found),
    and only its next generation was mapped. The filled customer is mapped at once."""
    rules = '[customers]\n"acme-42" = "cus_A"\n'
    code = "meter_event_no_customer_defined"
    if fmt == "jsonl":
        payload = {"customer_id": "acme-42", "value": 5}
        text = _jsonl({**ROW, "payload": payload, "error": {"code": code}})
    else:
        text = f"{HEADER},customer_id,payload_value,error_code\n"
        text += f"a1,1764000000,api_requests,acme-42,5,{code}\n"
    found = remediate(tmp_path, f"c.{fmt}", text, rules=rules)
    [row] = found["corrected"]
    customer = (
        row["payload"]["stripe_customer_id"]
        if fmt == "jsonl"
        else row["payload_stripe_customer_id"]
    )
    assert customer == "cus_A"
    changes = [(a["rule"], a["after"]) for a in found["audit"] if a["kind"] == "correction"]
    filled = (
        ("rename_key", "stripe_customer_id") if fmt == "jsonl" else ("fill_customer_key", "acme-42")
    )
    assert changes == [filled, ("map_customer", "cus_A")]
