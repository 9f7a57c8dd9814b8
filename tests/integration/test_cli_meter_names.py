"""Event names matched to meters through `meterfix remediate`, found by a probe of the meter
rules: each case billed a row to another meter than the one it named (or quarantined a row
naming a meter that exists), and each now does what the rules table says.

Through the real console script, CSV and JSON Lines (the column path and the row path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli_rule_edges import remediate

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"


def _meter(name: str, status: str = "active", customer: str = "", value: str = "") -> dict:
    meter: dict[str, Any] = {"id": f"mtr_{len(name)}_{name}", "event_name": name, "status": status}
    if customer:
        meter["customer_mapping"] = {"event_payload_key": customer, "type": "by_id"}
    if value:
        meter["value_settings"] = {"event_payload_key": value}
    return meter


def _meters(tmp_path: Path, *meters: dict) -> Path:
    path = tmp_path / "meters.json"
    path.write_text(json.dumps({"data": list(meters)}, ensure_ascii=False))
    return path


def _rows(names: list[str], code: str = "no_meter") -> str:
    """`identifier:event name` each, one row a name, failed with `code`."""
    pairs = [name.split(":", 1) for name in names]
    lines = [f"{row},1764000000,{event},cus_1,5,{code}" for row, event in pairs]
    return HEADER + "\n".join(lines) + "\n"


def _outcome(found: dict[str, Any]) -> dict[str, str]:
    """identifier -> the event name a corrected row went out with, or the quarantine reason."""
    out = {row["identifier"].removesuffix("-mfx1"): row["event_name"] for row in found["corrected"]}
    out.update({row["identifier"]: row["mfx_reason"] for row in found["quarantine"]})
    return out


def test_a_name_an_active_meter_has_is_that_meters_whatever_its_twins(tmp_path: Path) -> None:
    """Active `api_requests` and `api-requests`: a row naming `api_requests` exactly (Stripe
    found no meter when it was sent) was quarantined, "no single active meter matches", as
    two meters are it but for `-`/`_`; it names one of them exactly."""
    meters = _meters(tmp_path, _meter("api_requests"), _meter("api-requests"))
    found = remediate(tmp_path, "t.csv", _rows(["a:api_requests", "b:API_Requests"]), meters=meters)
    assert _outcome(found) == {
        "a": "api_requests",
        "b": "no single active meter matches event_name 'API_Requests': it is 'api_requests', "
        "'api-requests' but for case, spaces, '-' or '_'; which is meant is not guessed",
    }


def test_a_fuzzy_match_never_changes_a_word_of_the_name(tmp_path: Path) -> None:
    """`storage_tb` was billed as `storage_gb` (terabytes as gigabytes), `gpu_hours_h100` as
    `gpu_hours_a100`, `storage_gb_eu` as `storage_gb` (the region dropped), `tokens v2` as
    `tokens`: each the one candidate past `fuzzy_cutoff`. A misspelt word is still matched
    (`storaeg_gb`), and so is a word only case folding tells apart (`STRASSE`)."""
    meters = _meters(
        tmp_path,
        _meter("storage_gb"),
        _meter("gpu_hours_a100"),
        _meter("tokens"),
        _meter("straße_calls"),
    )
    names = ["t:storage_tb", "h:gpu_hours_h100", "e:storage_gb_eu", "v:tokens v2"]
    names += ["s:storaeg_gb", "g:STRASSE_CALLS", "d:storage.gb"]
    found = remediate(tmp_path, "t.csv", _rows(names), meters=meters)
    refused = "no single active meter matches event_name {!r}"
    assert _outcome(found) == {
        "t": refused.format("storage_tb"),
        "h": refused.format("gpu_hours_h100"),
        "e": refused.format("storage_gb_eu"),
        "v": refused.format("tokens v2"),
        "s": "storage_gb",
        "g": "straße_calls",
        "d": "storage_gb",
    }
    rules = {line["identifier"]: line["rule"] for line in found["audit"] if "rule" in line}
    assert rules == {"s": "fuzzy_event_name", "g": "fuzzy_event_name", "d": "fuzzy_event_name"}


@pytest.mark.parametrize("successor", [True, False], ids=["successor", "none"])
def test_a_name_an_archived_meter_has_goes_to_its_successor_only(
    tmp_path: Path, successor: bool
) -> None:
    """`TOKENS_V1` (Stripe found no meter of that spelling; `tokens_v1` is archived) was
    billed to the active `tokens` by a fuzzy match, whether or not `[meter_successors]` named
    it the successor, or with the successor rule turned off. An archived meter's usage goes
    to its configured successor, its keys moved; without one the row is quarantined, saying
    whose name it is."""
    meters = _meters(
        tmp_path,
        _meter("tokens", customer="customer", value="tokens"),
        _meter("tokens_v1", status="inactive"),
    )
    rules = '[meter_successors]\n"tokens_v1" = "tokens"\n' if successor else ""
    found = remediate(tmp_path, "t.csv", _rows(["k:TOKENS_V1"]), rules=rules, meters=meters)
    if not successor:
        assert _outcome(found) == {
            "k": "no single active meter matches event_name 'TOKENS_V1': it is the archived "
            "meter 'tokens_v1', which has no active successor ([meter_successors] names none)"
        }
        return
    [row] = found["corrected"]
    assert (row["event_name"], row["payload_customer"], row["payload_tokens"]) == (
        "tokens",
        "cus_1",
        "5",
    )
    assert [(line["rule"], line["after"]) for line in found["audit"][:-1]] == [
        ("successor_meter", "tokens"),
        ("rename_key", "customer"),
        ("rename_key", "tokens"),
    ]


def test_rules_turned_off_are_not_played_by_the_fuzzy_match(tmp_path: Path) -> None:
    """With `match_event_name` turned off, `API Requests` was still sent to `api_requests` by
    the fuzzy match (a ratio of 1.0): turning the rule off did nothing. An `[event_names]`
    alias is matched as the names are (`API-CALL` is the alias `api-call`)."""
    meters = _meters(tmp_path, _meter("api_requests"))
    rules = '[event_names]\n"api-call" = "api_requests"\n'
    names = ["a:API Requests", "b:API-CALL"]
    found = remediate(tmp_path, "t.csv", _rows(names), rules=rules, meters=meters)
    assert _outcome(found) == {"a": "api_requests", "b": "api_requests"}
    off = rules + '[policy]\ndisabled_rules = ["match_event_name"]\n'
    found = remediate(tmp_path, "u.csv", _rows(names), rules=off, meters=meters)
    assert _outcome(found) == {
        "a": "no single active meter matches event_name 'API Requests' (rule match_event_name "
        "is turned off)",
        "b": "api_requests",
    }


def test_five_archived_successors_in_a_row_are_followed(tmp_path: Path) -> None:
    """The rules say up to 5 archived successors in a row are followed: a chain of exactly 5
    (`h2` to `h6`, then the active `c`) was refused, "more than 5"."""
    hops = [f"h{n}" for n in range(1, 8)]
    meters = _meters(tmp_path, *(_meter(h, status="inactive") for h in hops), _meter("c"))
    five = "".join(f'"h{n}" = "h{n + 1}"\n' for n in range(1, 6)) + '"h6" = "c"\n'
    six = "".join(f'"h{n}" = "h{n + 1}"\n' for n in range(1, 7)) + '"h7" = "c"\n'
    rows = _rows(["a:h1"], code="archived_meter")
    found = remediate(tmp_path, "t.csv", rows, rules=f"[meter_successors]\n{five}", meters=meters)
    assert _outcome(found) == {"a": "c"}
    found = remediate(tmp_path, "u.csv", rows, rules=f"[meter_successors]\n{six}", meters=meters)
    assert _outcome(found) == {
        "a": "meter 'h1' is archived and has no active successor: more than 5 archived "
        "successors in a row"
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_row_moved_to_a_meter_holding_a_second_amount_is_refused(
    tmp_path: Path, fmt: str
) -> None:
    """`Tokens` (no meter) matched to `tokens`, whose value key is `tokens`: the row held
    `tokens: 9` and `value: 5`; 9 was billed and 5 went out beside it, unsaid. Both are
    named and the row quarantined; the same amount under both is one amount."""
    meters = _meters(tmp_path, _meter("tokens", customer="customer", value="tokens"))
    rows = [("two", 5, 9), ("same", 9, 9)]
    if fmt == "csv":
        text = "identifier,timestamp,event_name,payload_customer,payload_value,payload_tokens,"
        text += "error_code\n" + "".join(
            f"{i},1764000000,Tokens,cus_1,{v},{t},no_meter\n" for i, v, t in rows
        )
    else:
        text = "".join(
            json.dumps(
                {
                    "identifier": i,
                    "timestamp": 1764000000,
                    "event_name": "Tokens",
                    "payload": {"customer": "cus_1", "value": v, "tokens": t},
                    "error_code": "no_meter",
                }
            )
            + "\n"
            for i, v, t in rows
        )
    found = remediate(tmp_path, f"t.{fmt}", text, meters=meters)
    nine, five = ("'9'", "'5'") if fmt == "csv" else ("9", "5")  # a CSV's cells are text
    assert _outcome(found) == {
        "two": f"payload key 'tokens' holds {nine} and alias 'value' holds {five}: which one "
        "is meant is not guessed",
        "same": "tokens",
    }


def test_a_name_spelt_with_a_combining_accent_is_the_meter_it_reads_as(tmp_path: Path) -> None:
    """`Café Visits` with a combining accent (U+0301) is `café_visits` to the eye: it went
    to `cafe_visits`, the fuzzy match reading the accent as a letter of its own."""
    meters = _meters(tmp_path, _meter("cafe_visits"), _meter("café_visits"))
    found = remediate(tmp_path, "t.csv", _rows(["c:Cafe\u0301 Visits"]), meters=meters)
    assert _outcome(found) == {"c": "café_visits"}
