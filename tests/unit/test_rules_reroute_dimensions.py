"""A row moved to a successor meter is billed with the amount and customer it was sent with,
never with another key that happens to carry the successor's key name; a row with too many
payload keys keeps (renamed) the alias a required key of its meter is under.

Each case runs through the rule's row function, the rule on a batch (`RULES`), and the whole
engine (written rows and audit lines).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from remediation.changes import Context
from remediation.core.batch import from_records
from remediation.core.rules import RULES
from remediation.core.rules.keys import drop_unused_keys_row, rename_value_key_row
from remediation.core.rules.meters import reroute_to_successor_row
from remediation.engine import remediate
from remediation.errors import Uncorrectable
from remediation.formats import FileFormat
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import load_rules
from remediation.validation import MeterIndex

NOW = 1_764_000_000
ARCHIVED = "archived_meter"
TOO_MANY = "meter_event_dimension_count_too_high"
METERS = [
    # tokens_v1 billed `tokens` for `stripe_customer_id`; its successor bills `units` for `account`
    Meter("m1", "tokens_v1", status="inactive", value_key="tokens"),
    Meter("m2", "units", value_key="units", customer_key="account"),
    # a successor whose keys are the old meter's the other way round
    Meter("m3", "swapped_v1", status="inactive", customer_key="a", value_key="b"),
    Meter("m4", "swapped", customer_key="b", value_key="a"),
    Meter("m5", "regional", dimension_keys=("region",)),
    Meter("m6", "api_requests"),
]
RULES_TOML = """
[meter_successors]
"tokens_v1" = "units"
"swapped_v1" = "swapped"
[dimension_aliases]
region = ["zone", "area"]
"""
CONTEXT = Context(MeterIndex(METERS), load_rules(RULES_TOML), NOW)


def rec(event: str, code: str, ident: str = "id1", **payload: object) -> UsageRecord:
    return UsageRecord(1, ident, NOW, event, dict(payload), {}, code, None)


def by_row(record: UsageRecord, row_rule: Any) -> tuple[Any, ...]:
    work = copy.deepcopy(record)
    try:
        made = row_rule(work, CONTEXT)
    except Uncorrectable as exc:
        return ("quarantined", exc.reason)
    return (
        "fixed",
        work.event_name,
        work.payload,
        [(c.rule, c.field, c.before, c.after) for c in made],
    )


def by_batch(records: list[UsageRecord], code: str) -> list[tuple[Any, ...]]:
    fix = RULES[code](from_records(records), CONTEXT)
    changes: dict[int, list[Any]] = {i: [] for i in range(len(records))}
    for change in fix.changes:
        before, after = change.before.values(), change.after.values()
        for j, i in enumerate(change.at.tolist()):
            rule = change.rule if isinstance(change.rule, str) else change.rule[j]
            name = change.field if isinstance(change.field, str) else change.field[j]
            changes[i].append((rule, name, before[j], after[j]))
    return [
        ("quarantined", fix.failed[i])
        if i in fix.failed
        else ("fixed", row.event_name, row.payload, changes[i])
        for i, row in enumerate(fix.batch.records())
    ]


def engine(
    records: list[UsageRecord], tmp_path: Path
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """(summary, rows written to the corrected and quarantine outputs, audit lines)."""
    result = remediate(
        records,
        source="in.jsonl",
        fmt=FileFormat.JSONL,
        meters=METERS,
        rules=CONTEXT.rules,
        now=NOW,
        out_dir=tmp_path,
        rejected=True,
    )
    rows = [
        json.loads(line)
        for output in result.outputs
        for line in output.path.read_text().splitlines()
    ]
    audit_path = Path(result.summary["outputs"]["audit"])
    audit = [json.loads(line) for line in audit_path.read_text().splitlines()]
    return result.summary, rows, [a for a in audit if a["kind"] != "summary"]


# --- C4: a reroute to a successor meter -----------------------------------------------------

CONFLICTS = [
    (
        rec("tokens_v1", ARCHIVED, stripe_customer_id="cus_1", tokens="5", units="99"),
        "meter 'tokens_v1' moves to 'units': its value key 'tokens' holds '5' but the row "
        "already holds '99' under the successor's value key 'units'",
    ),
    (
        rec("tokens_v1", ARCHIVED, stripe_customer_id="cus_1", tokens="5", account="cus_other"),
        "meter 'tokens_v1' moves to 'units': its customer key 'stripe_customer_id' holds "
        "'cus_1' but the row already holds 'cus_other' under the successor's customer key "
        "'account'",
    ),
]


@pytest.mark.parametrize(("record", "reason"), CONFLICTS)
def test_a_rerouted_row_holding_another_amount_or_customer_under_the_new_key_is_quarantined(
    record: UsageRecord, reason: str, tmp_path: Path
) -> None:
    """It would be billed `99` (or to `cus_other`), not the `5` for `cus_1` it was sent with;
    which one the row means is not ours to guess."""
    assert by_row(record, reroute_to_successor_row) == ("quarantined", reason)
    assert by_batch([record], ARCHIVED) == [("quarantined", reason)]
    summary, rows, audit = engine([record], tmp_path)
    assert summary["quarantined"] == 1 and summary["corrected"] == 0
    (row,) = rows
    assert row["payload"] == record.payload and row["event_name"] == "tokens_v1"
    assert row["mfx_code"] == ARCHIVED and row["mfx_reason"] == reason
    assert [(a["kind"], a["reason"]) for a in audit] == [("quarantine", reason)]


def test_a_rerouted_batch_whose_rows_all_hold_the_new_keys_still_moves_the_old_amount() -> None:
    """Rows that all hold the successor's keys take the column lane (no renaming); a row that
    also holds the old meter's keys must not: its old amount is the one billed."""
    clean = rec("tokens_v1", ARCHIVED, "c", account="cus_1", units="7")
    conflict = rec("tokens_v1", ARCHIVED, "d", account="cus_1", units="99", tokens="5")
    same = rec("tokens_v1", ARCHIVED, "e", account="cus_1", units="5", tokens="5")
    reason = (
        "meter 'tokens_v1' moves to 'units': its value key 'tokens' holds '5' but the row "
        "already holds '99' under the successor's value key 'units'"
    )
    moved = ("successor_meter", "event_name", "tokens_v1", "units")
    assert by_batch([clean, conflict, same], ARCHIVED) == [
        ("fixed", "units", {"account": "cus_1", "units": "7"}, [moved]),
        ("quarantined", reason),
        (
            "fixed",
            "units",
            {"account": "cus_1", "units": "5"},
            [moved, ("rename_key", "payload.tokens", "tokens", "units")],
        ),
    ]
    rows = [clean, conflict, same]
    assert by_batch(rows, ARCHIVED) == [by_row(r, reroute_to_successor_row) for r in rows]


def test_a_moved_amount_equal_to_or_replacing_a_blank_new_key_wins_and_is_audited(
    tmp_path: Path,
) -> None:
    equal = rec("tokens_v1", ARCHIVED, "e", stripe_customer_id="cus_1", tokens="5", units="5")
    blank = rec("tokens_v1", ARCHIVED, "b", stripe_customer_id="cus_1", tokens="5", units=" ")
    assert by_row(equal, reroute_to_successor_row) == (
        "fixed",
        "units",
        {"account": "cus_1", "units": "5"},
        [
            ("successor_meter", "event_name", "tokens_v1", "units"),
            ("rename_key", "payload.stripe_customer_id", "stripe_customer_id", "account"),
            ("rename_key", "payload.tokens", "tokens", "units"),
        ],
    )
    assert by_row(blank, reroute_to_successor_row) == (
        "fixed",
        "units",
        {"account": "cus_1", "units": "5"},
        [
            ("successor_meter", "event_name", "tokens_v1", "units"),
            ("rename_key", "payload.stripe_customer_id", "stripe_customer_id", "account"),
            ("rename_key", "payload.units", " ", "5"),
            ("rename_key", "payload.tokens", "tokens", "units"),
        ],
    )
    assert by_batch([equal, blank], ARCHIVED) == [
        by_row(equal, reroute_to_successor_row),
        by_row(blank, reroute_to_successor_row),
    ]
    summary, rows, audit = engine([equal, blank], tmp_path)
    assert summary["corrected"] == 2 and summary["quarantined"] == 0
    assert [(r["identifier"], r["event_name"], r["payload"]) for r in rows] == [
        ("e-mfx1", "units", {"account": "cus_1", "units": "5"}),
        ("b-mfx1", "units", {"account": "cus_1", "units": "5"}),
    ]
    assert [(a["identifier"], a["rule"], a["field"], a["before"], a["after"]) for a in audit] == [
        ("e", "successor_meter", "event_name", "tokens_v1", "units"),
        ("e", "rename_key", "payload.stripe_customer_id", "stripe_customer_id", "account"),
        ("e", "rename_key", "payload.tokens", "tokens", "units"),
        ("b", "successor_meter", "event_name", "tokens_v1", "units"),
        ("b", "rename_key", "payload.stripe_customer_id", "stripe_customer_id", "account"),
        ("b", "rename_key", "payload.units", " ", "5"),
        ("b", "rename_key", "payload.tokens", "tokens", "units"),
    ]


def test_a_successor_with_the_old_keys_swapped_swaps_the_values(tmp_path: Path) -> None:
    """Old meter: customer `a`, value `b`; successor: customer `b`, value `a`. Each key holds
    the other's meaning after the move (nothing was renamed: the customer was billed 5)."""
    record = rec("swapped_v1", ARCHIVED, a="cus_1", b="5")
    summary, rows, audit = engine([record], tmp_path)
    assert summary["corrected"] == 1
    (row,) = rows
    assert row["event_name"] == "swapped" and row["payload"] == {"b": "cus_1", "a": "5"}
    assert [(a["rule"], a["field"], a["before"], a["after"]) for a in audit] == [
        ("successor_meter", "event_name", "swapped_v1", "swapped"),
        ("rename_key", "payload.a", "a", "b"),
        ("rename_key", "payload.b", "b", "a"),
    ]
    assert by_batch([record], ARCHIVED) == [by_row(record, reroute_to_successor_row)]


# --- C7: too many payload keys, a required key under an alias --------------------------------


def test_too_many_keys_with_a_dimension_under_its_alias_renames_it_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    record = rec("regional", TOO_MANY, stripe_customer_id="c", value="1", zone="eu", color="red")
    expected = (
        "fixed",
        "regional",
        {"stripe_customer_id": "c", "value": "1", "region": "eu"},
        [
            ("fill_dimension", "payload.region", None, "eu"),
            # the alias's going has its line: the row as it came can be told from the audit
            ("fill_dimension", "payload.zone", "eu", None),
            ("drop_unused_keys", "payload.color", "red", None),
        ],
    )
    assert by_row(record, drop_unused_keys_row) == expected
    assert by_batch([record], TOO_MANY) == [expected]
    summary, rows, audit = engine([record], tmp_path)
    assert summary["corrected"] == 1 and summary["quarantined"] == 0
    (row,) = rows
    assert row["payload"] == {"stripe_customer_id": "c", "value": "1", "region": "eu"}
    assert [(a["code"], a["rule"], a["field"], a["before"], a["after"]) for a in audit] == [
        (TOO_MANY, "fill_dimension", "payload.region", None, "eu"),
        (TOO_MANY, "fill_dimension", "payload.zone", "eu", None),
        (TOO_MANY, "drop_unused_keys", "payload.color", "red", None),
    ]


def test_too_many_keys_with_the_value_under_its_alias_keeps_it_for_the_value_rule(
    tmp_path: Path,
) -> None:
    """`quantity` is the meter's value under an alias, not a key it does not use: it is renamed
    (by the value rule, the next round), not dropped to be quarantined as `value not found`."""
    record = rec("api_requests", TOO_MANY, stripe_customer_id="c", quantity="3", color="red")
    summary, rows, audit = engine([record], tmp_path)
    assert summary["corrected"] == 1 and summary["quarantined"] == 0
    (row,) = rows
    assert row["payload"] == {"stripe_customer_id": "c", "value": "3"}
    assert [(a["rule"], a["field"], a["before"], a["after"]) for a in audit] == [
        ("drop_unused_keys", "payload.color", "red", None),
        ("rename_key", "payload.quantity", "quantity", "value"),
    ]


UNCORRECTABLE = [
    # no alias of `region` in the row
    (
        {"stripe_customer_id": "c", "value": "1", "color": "red"},
        "dimension key 'region' missing and no single alias holds it",
    ),
    # two aliases: which one is the region is not ours to guess
    (
        {"stripe_customer_id": "c", "value": "1", "zone": "eu", "area": "us", "color": "red"},
        "dimension key 'region' missing and no single alias holds it",
    ),
]


@pytest.mark.parametrize(("payload", "reason"), UNCORRECTABLE)
def test_too_many_keys_missing_a_dimension_no_alias_gives_is_quarantined_saying_so(
    payload: dict[str, object], reason: str, tmp_path: Path
) -> None:
    record = rec("regional", TOO_MANY, **payload)
    assert by_row(record, drop_unused_keys_row) == ("quarantined", reason)
    assert by_batch([record], TOO_MANY) == [("quarantined", reason)]
    summary, rows, audit = engine([record], tmp_path)
    assert summary["quarantined"] == 1
    (row,) = rows
    assert row["payload"] == payload and row["mfx_reason"] == reason
    assert [(a["kind"], a["code"], a["reason"]) for a in audit] == [
        ("quarantine", TOO_MANY, reason)
    ]


def test_too_many_keys_when_every_extra_key_is_an_alias_of_a_lacking_key_says_so() -> None:
    """Nothing to drop, and the reason says why: not 'every key is used by the meter'."""
    record = rec("api_requests", TOO_MANY, stripe_customer_id="c", quantity="3")
    reason = (
        "no payload key to drop: 'quantity' is an alias of the meter's key 'value', "
        "which the row lacks"
    )
    assert by_row(record, drop_unused_keys_row) == ("quarantined", reason)
    assert by_batch([record], TOO_MANY) == [("quarantined", reason)]


def test_a_dimension_its_alias_holds_with_the_fill_rule_disabled_says_the_rule_is_off() -> None:
    """Not 'no single alias holds it': `zone` does."""
    rules = load_rules(RULES_TOML + '[policy]\ndisabled_rules = ["fill_dimension"]\n')
    ctx = Context(MeterIndex(METERS), rules, NOW)
    record = rec("regional", TOO_MANY, stripe_customer_id="c", value="1", zone="eu", color="red")
    with pytest.raises(Uncorrectable) as refused:
        drop_unused_keys_row(record, ctx)
    assert (
        refused.value.reason == "dimension key 'region' missing and rule fill_dimension is disabled"
    )


def test_a_value_under_its_alias_with_the_rename_rule_disabled_says_the_rule_is_off() -> None:
    """Not 'no single aliased column' (`quantity` is one), and the row is left as it came:
    the alias was renamed before the rule was found disabled."""
    rules = load_rules(RULES_TOML + '[policy]\ndisabled_rules = ["rename_value_key"]\n')
    ctx = Context(MeterIndex(METERS), rules, NOW)
    record = rec(
        "api_requests", "meter_event_value_not_found", stripe_customer_id="c", quantity="3"
    )
    with pytest.raises(Uncorrectable) as refused:
        rename_value_key_row(record, ctx)
    assert refused.value.reason == "rule rename_value_key is disabled"
    assert record.payload == {"stripe_customer_id": "c", "quantity": "3"}
