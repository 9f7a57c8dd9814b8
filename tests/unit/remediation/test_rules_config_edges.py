"""Rules files that loaded and then bent what is billed: a blank key mapping every blank
customer to one, an alias making a usage file look like failed records, a skew clamping
next year to now, a depth no Stripe row fits, a default event name Stripe refuses, a fuzzy
tie broken by the alphabet. Each is refused at load, or (the tie) left to a human."""

from __future__ import annotations

import pytest

from remediation.changes import Context
from remediation.core.rules.meters import fix_event_name_row
from remediation.errors import BadRules, Uncorrectable
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import load_rules
from remediation.validation import MeterIndex

NOW = 1_764_000_000


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        ('[customers]\n"" = "cus_1"\n', "[customers] maps an empty key '': name what it maps"),
        ('[customers]\n" " = "cus_1"\n', "[customers] maps an empty key ' ': name what it maps"),
        ('[event_names]\n"" = "api"\n', "[event_names] maps an empty key '': name what it maps"),
        (
            '[columns]\n"note" = "error_message"\n',
            "[columns] 'note' must map to identifier, timestamp, event_name or payload_<key>, "
            "not 'error_message'",
        ),
        (
            '[columns]\n"note" = "mfx_code"\n',
            "[columns] 'note' must map to identifier, timestamp, event_name or payload_<key>, "
            "not 'mfx_code'",
        ),
        (
            "[policy]\nfuture_skew_seconds = 9223372036854775807\n",
            "policy 'future_skew_seconds' must be at most 86400 (a day), not "
            "9223372036854775807: clamping usage further ahead to now may move it into "
            "another period",
        ),
        (
            "[policy]\nmax_json_depth = 1\n",
            "policy 'max_json_depth' must be an integer of at least 2 and at most 32 (what "
            "Stripe is taken to accept), not 1",
        ),
        (
            '[policy]\ndefault_event_name = "api\\u0007"\n',
            "policy 'default_event_name' 'api\\x07' holds a control character (U+0007 at "
            "position 4)",
        ),
        (
            f'[policy]\ndefault_event_name = "{"e" * 101}"\n',
            f"policy 'default_event_name' {'e' * 40!r}… (101 characters) is longer than 100 "
            "characters",
        ),
        (
            f'[policy]\nmax_event_name_chars = 20\ndefault_event_name = "{"e" * 21}"\n',
            f"policy 'default_event_name' {'e' * 21!r} is longer than 20 characters",
        ),
    ],
)
def test_rules_that_would_bend_what_is_billed_are_refused(toml: str, reason: str) -> None:
    with pytest.raises(BadRules) as refused:
        load_rules(toml)
    assert refused.value.reason == reason


def test_rules_at_their_edges_still_load() -> None:
    rules = load_rules(
        '[columns]\n"cust" = "payload_stripe_customer_id"\n"when" = "timestamp"\n'
        '[policy]\nfuture_skew_seconds = 86400\nmax_json_depth = 2\ndefault_event_name = "api"\n'
    )
    assert rules.columns["cust"] == "payload_stripe_customer_id"
    assert (rules.policy.future_skew_seconds, rules.policy.limits.max_json_depth) == (86400, 2)


def test_a_fuzzy_tie_is_left_to_a_human_whatever_the_margin() -> None:
    """`api_requests_c` is as near `api_requests_a` as `api_requests_b`: with
    `fuzzy_margin = 0` it went to `_a`, the first in the alphabet, and was billed there."""
    meters = [Meter("m1", "api_requests_a"), Meter("m2", "api_requests_b")]
    rules = load_rules("[policy]\nfuzzy_margin = 0.0\nfuzzy_cutoff = 0.5\n")
    ctx = Context(MeterIndex(meters), rules, NOW)
    row = UsageRecord(1, "r1", NOW, "api_requests_c", {"stripe_customer_id": "c", "value": 1})
    with pytest.raises(Uncorrectable, match="no single active meter matches"):
        fix_event_name_row(row, ctx)
    near = UsageRecord(2, "r2", NOW, "api_requests_bb", {"stripe_customer_id": "c", "value": 1})
    assert [c.after for c in fix_event_name_row(near, ctx)] == ["api_requests_b"]


def test_a_runs_fuzzy_comparisons_are_bounded_and_the_rest_quarantined_for_a_rerun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 meters of alike names cost 70-100 ms a distinct unknown name, all compared in
    full: a file of 10,000 such names outlasted the worker's time limit. A run compares at
    most `FUZZY_SCORES` names; past them a name is left unmatched, saying so."""
    from remediation.core.rules import meters as meter_rules

    monkeypatch.setattr(meter_rules, "FUZZY_SCORES", 5)
    meters = [Meter(f"m{i}", f"event_{i}") for i in range(3)]
    ctx = Context(MeterIndex(meters), load_rules(None), NOW)
    picked = []
    for n, name in enumerate(["evnt_0", "evnt_1", "evnt_2"]):  # typos: their words agree
        row = UsageRecord(n, f"r{n}", NOW, name, {"stripe_customer_id": "c", "value": 1})
        try:
            picked.append(next(c.after for c in fix_event_name_row(row, ctx)))
        except Uncorrectable as refused:
            picked.append(refused.reason)
    assert picked == [  # 3 meters compared for the first name; 3 more would pass the bound
        "event_0",
        *(
            f"no active meter matches event_name {name!r} without a fuzzy match, and none was "
            "tried: this run made the 5 fuzzy comparisons it may; re-run the quarantined rows "
            "to match the rest"
            for name in ("evnt_1", "evnt_2")
        ),
    ]
    assert ctx.meter_picks.scored == 3
    again = Context(MeterIndex(meters), load_rules(None), NOW)  # a re-run: comparisons anew
    row = UsageRecord(1, "r1", NOW, "evnt_1", {"stripe_customer_id": "c", "value": 1})
    assert next(c.after for c in fix_event_name_row(row, again)) == "event_1"


@pytest.mark.parametrize(
    ("successors", "why"),
    [
        ("", " ([meter_successors] names none)"),
        ('"a" = "b"\n"b" = "a"\n', ": [meter_successors] loop ('a' -> 'b' -> 'a')"),
        ('"a" = "nowhere"\n', ": [meter_successors] names 'nowhere', which no meter is"),
        ('"a" = "b"\n', ": 'b', the last successor named, is archived too"),
    ],
)
def test_an_archived_meter_without_an_active_successor_says_why(successors: str, why: str) -> None:
    """Successor loops, successors no meter has and chains of archived meters all said "has
    no active successor", leaving the operator to guess which line of the rules was wrong."""
    from remediation.core.rules.meters import reroute_to_successor_row

    meters = [Meter("m1", "a", status="inactive"), Meter("m2", "b", status="inactive")]
    ctx = Context(MeterIndex(meters), load_rules(f"[meter_successors]\n{successors}"), NOW)
    row = UsageRecord(1, "r1", NOW, "a", {"stripe_customer_id": "c", "value": 1})
    with pytest.raises(Uncorrectable) as refused:
        reroute_to_successor_row(row, ctx)
    assert refused.value.reason == f"meter 'a' is archived and has no active successor{why}"


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ("", "policy round_too_many_digits is off"),
        (
            "round_too_many_digits = true\nvalue_precision = -1\n",
            "policy value_precision names no precision to round to",
        ),
    ],
)
def test_a_value_not_rounded_says_which_policy_stops_it(policy: str, why: str) -> None:
    """With rounding allowed and no precision to round to, the reason said the policy "does
    not allow rounding" (it did). (A value of 13 places: one within the 12 has nothing to
    round, whatever the policy, next test.)"""
    from remediation.core.rules.values import round_value_row

    ctx = Context(MeterIndex([Meter("m1", "api")]), load_rules(f"[policy]\n{policy}"), NOW)
    value = "1." + "5" * 13
    row = UsageRecord(1, "r1", NOW, "api", {"stripe_customer_id": "c", "value": value})
    with pytest.raises(Uncorrectable) as refused:
        round_value_row(row, ctx)
    assert refused.value.reason == f"value {value!r} (13 decimal places) has too many digits; {why}"


@pytest.mark.parametrize("policy", ["", "round_too_many_digits = true\nvalue_precision = 2\n"])
@pytest.mark.parametrize("value", ["7", "2.5"])
def test_a_value_within_its_decimal_places_has_nothing_to_round(policy: str, value: str) -> None:
    """Stripe refused `7` (or `2.5`) for too many digits: the reason said "(0 decimal places)
    has too many digits; policy round_too_many_digits is off", against itself. It has no more
    places than it may: nothing to round, whatever the policy."""
    from remediation.core.rules.values import round_value_row

    ctx = Context(MeterIndex([Meter("m1", "api")]), load_rules(f"[policy]\n{policy}"), NOW)
    row = UsageRecord(1, "r1", NOW, "api", {"stripe_customer_id": "c", "value": value})
    with pytest.raises(Uncorrectable) as refused:
        round_value_row(row, ctx)
    allowed = 2 if policy else 12
    said = f"value {value!r} has at most {allowed} decimal places; nothing to round"
    assert refused.value.reason == said
