"""Each rule on a batch of rows does what its row function does to each row on its own (the
row API is a batch of one): the same values after, the same changes, the same reasons.

The rules with column lanes (timestamps, refused old usage, values, event names, successor
meters, customers) are fed rows of every shape, so that some rows take the lane and others
the row function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.changes import Change, Context, CustomerPicks
from remediation.core.batch import from_records
from remediation.core.rules import RULES
from remediation.core.rules.customers import fix_customer_row
from remediation.core.rules.meters import fix_event_name_row, reroute_to_successor_row
from remediation.core.rules.timestamps import fix_timestamp_row, refuse_past_row
from remediation.core.rules.values import fix_value_row, round_value_row
from remediation.errors import Uncorrectable
from remediation.jsonnumbers import JsonNumber
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import load_rules
from remediation.validation import MeterIndex
from tests.fuzz import fuzz_examples

NOW = 1_764_000_000
SLOW = HealthCheck.too_slow
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "api_v1", status="inactive"),  # successor api_requests: the same keys
    Meter("m3", "tokens_v1", status="inactive"),  # successor tokens: another value key
    Meter("m4", "tokens", value_key="tokens"),
    Meter("m5", "storage_gb"),
]
RULES_TOML = """
[meter_successors]
"api_v1" = "api_requests"
"tokens_v1" = "tokens"
[event_names]
"calls" = "api_requests"
[customers]
"ext-1" = "cus_1"
" ext-2 " = "cus_2"
"same" = "same"
"""
_LOADED = load_rules(RULES_TOML)
# A map to "" no longer loads from a file; the rules still meet one built in code.
CONTEXT = Context(
    MeterIndex(METERS), replace(_LOADED, customers={**_LOADED.customers, "blank": ""}), NOW
)
TEXT = st.text(alphabet=st.sampled_from("aZ1,. -_"), max_size=6)
STAMPS = st.one_of(
    st.integers(NOW - 40 * 86_400, NOW * 10**9 + 10**6),
    st.sampled_from([str(NOW * 1000), str(NOW + 100), str(NOW * 10**6), "2026-11-30T10:00:00Z"]),
    st.sampled_from(  # ISO-8601: read on the column when spelled `...T..Z` on a real day
        [
            "2025-11-20T23:59:59Z",
            "2024-02-29T12:00:00Z",  # a leap day, past the window
            "2025-11-31T10:00:00Z",  # no such day
            "2025-02-29T10:00:00Z",
            "2025-11-25T00:00:60Z",  # a leap second: fromisoformat refuses it
            "2025-11-25T10:00:00+00:00",
            "2025-11-25T10:00:00.5Z",
            "2025-11-25 10:00:00Z",
            " 2025-11-25T10:00:00Z",
            "2025-11-25T10:00:00",  # no zone: never placed
            "2026-01-25T10:00:00Z",  # far ahead: refused
            "2025-11-24T16:30:00Z",  # a small skew: clamped
        ]
    ),
    st.integers(NOW * 1000 - 10**6, NOW * 1000 + 10**8).map(str),
    st.floats(min_value=1e9, max_value=2e12),
    TEXT,
    st.none(),
)
VALUES = st.one_of(
    st.sampled_from(["1,234", "12,345.50", "0,012.00", "1,000", " 7 ", "1e3", "12.0", "x"]),
    # no ASCII digit: numbers or not, as Decimal reads them (digits of other scripts count)
    st.sampled_from(["NaN", "inf", "-Infinity", "n/a", "", "twelve", "'\u0663'", "\uff11\uff12"]),
    # a sign no number holds, by a digit: refused on the column
    st.sampled_from(["$12.00", "5%", "3/4", "(12)", "€1,234.50", " 7 $", "'$3'", "1e3%"]),
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    TEXT,
)
NAMES = st.sampled_from(
    ["api_requests", "API-Requests", "calls", "api_v1", "tokens_v1", "tokens", "nope", "Storage GB"]
)
# map keys (a customer, one the same as its key, an empty one), texts that map once trimmed
CUSTOMERS = st.one_of(
    st.sampled_from(["ext-1", " ext-2 ", "ext-1 ", "same", "blank", "cus_9", " CUS_3", ""]), TEXT
)


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    payload: dict[str, object] = {"stripe_customer_id": draw(CUSTOMERS), "value": draw(VALUES)}
    if draw(st.booleans()):
        payload = {"value": payload["value"], "customer": payload["stripe_customer_id"]}
    return UsageRecord(0, "id", draw(STAMPS), draw(st.one_of(NAMES, st.none())), payload)


RowRule = Callable[[UsageRecord, Context], list[Change]]
CASES: list[tuple[str, RowRule]] = [
    ("timestamp_in_future", fix_timestamp_row),
    ("timestamp_too_far_in_past", refuse_past_row),
    ("meter_event_invalid_value", fix_value_row),
    ("no_meter", fix_event_name_row),
    ("archived_meter", reroute_to_successor_row),
    ("meter_event_customer_not_found", fix_customer_row),
]


def by_rows(rows: list[UsageRecord], row_rule: RowRule, ctx: Context = CONTEXT) -> list[Any]:
    found: list[Any] = []
    for row in rows:
        work = copy.deepcopy(row)
        try:
            made = row_rule(work, ctx)
        except Uncorrectable as exc:
            found.append(("quarantined", exc.reason))
            continue
        changes = [(c.rule, c.field, c.before, c.after) for c in made]
        found.append(("fixed", _shape(work), changes))
    return found


def by_batch(rows: list[UsageRecord], code: str, ctx: Context = CONTEXT) -> list[Any]:
    fix = RULES[code](from_records(rows), ctx)
    changes: dict[int, list[Any]] = {i: [] for i in range(len(rows))}
    for change in fix.changes:
        before, after = change.before.values(), change.after.values()
        for j, i in enumerate(change.at.tolist()):
            rule = change.rule if isinstance(change.rule, str) else change.rule[j]
            name = change.field if isinstance(change.field, str) else change.field[j]
            changes[i].append((rule, name, before[j], after[j]))
    fixed = fix.batch.records()
    return [
        ("quarantined", fix.failed[i]) if i in fix.failed else ("fixed", _shape(row), changes[i])
        for i, row in enumerate(fixed)
    ]


def _shape(row: UsageRecord) -> tuple[Any, ...]:
    return (row.timestamp, type(row.timestamp), row.event_name, list(row.payload.items()))


@pytest.mark.parametrize(("code", "row_rule"), CASES)
@settings(
    max_examples=fuzz_examples(120), suppress_health_check=[HealthCheck.too_slow], deadline=None
)
@given(rows=st.lists(records(), min_size=1, max_size=12))
def test_fuzz_a_rule_on_a_batch_is_its_row_function_on_each_row(
    code: str, row_rule: RowRule, rows: list[UsageRecord]
) -> None:
    rows = [_numbered(row, n) for n, row in enumerate(rows)]
    assert by_batch(rows, code) == by_rows(rows, row_rule)


@settings(max_examples=fuzz_examples(120), deadline=None)
@given(rows=st.lists(records(), min_size=1, max_size=12))
def test_fuzz_customers_without_the_map_rule_are_the_row_function(rows: list[UsageRecord]) -> None:
    """With `map_customer` turned off, no text is mapped (another rule may still pick a
    customer) and the batch rule gives what the row function gives."""
    rules = load_rules(RULES_TOML + '[policy]\ndisabled_rules = ["map_customer"]\n')
    ctx = Context(MeterIndex(METERS), rules, NOW)
    rows = [_numbered(row, n) for n, row in enumerate(rows)]
    code = "meter_event_customer_not_found"
    assert by_batch(rows, code, ctx) == by_rows(rows, fix_customer_row, ctx)


def _numbered(row: UsageRecord, number: int) -> UsageRecord:
    row.row_number = number + 1
    return row


@pytest.mark.parametrize("raw", ["1_0", "12_34", "1_2_3", "1_0.5", "1_0e3", "-1_0", "'1_0'"])
def test_an_underscore_separates_thousands_only_as_a_comma_does(raw: str) -> None:
    """`1_000` is written with a thousands separator (-> `1000`), as `1,000` and `1 000` are;
    `1_0` is not, as `1,0` is not: both are quarantined as text, whichever path a row takes.
    Python's Decimal reads `1_0` as 10 (PEP 515 grouping), which is not a rule of ours."""
    values = [raw, raw.replace("_", ","), "1_000", "1 000", "1,000", "12_345.50"]
    rows = [
        _numbered(UsageRecord(0, f"v{n}", NOW, "api_requests", {"value": value}), n)
        for n, value in enumerate(values)
    ]
    for found in (by_rows(rows, fix_value_row), by_batch(rows, "meter_event_invalid_value")):
        assert found[0] == ("quarantined", f"value {raw!r} is not a number")
        assert found[1][0] == "quarantined"
        assert [changes[-1][3] for _, _, changes in found[2:]] == ["1000"] * 3 + ["12345.5"]


def test_a_json_number_refused_as_a_value_is_quarantined_not_sent_again_unchanged() -> None:
    """A JSON `5` Stripe refused is as plain as the text `"5"`: nothing to correct, so the row
    is quarantined (it was "corrected" from 5 to 5 and re-sent under a new identifier, to be
    refused again). `5.0` is written `5`: that is a correction."""
    values: list[object] = [5, -3, 0, 1.5, "5", 5.0, 2.5e3]
    rows = [
        _numbered(UsageRecord(0, f"v{n}", NOW, "api_requests", {"value": value}), n)
        for n, value in enumerate(values)
    ]
    for found in (by_rows(rows, fix_value_row), by_batch(rows, "meter_event_invalid_value")):
        refused = [f"value {v!r} is already a plain number; nothing to correct" for v in values]
        assert found[:5] == [("quarantined", reason) for reason in refused[:5]]
        assert [changes for _, _, changes in found[5:]] == [
            [("normalize_value", "payload.value", 5.0, 5)],
            [("normalize_value", "payload.value", 2500.0, 2500)],
        ]


def test_a_json_number_json_writes_with_an_exponent_is_written_as_a_plain_number() -> None:
    """A JSON `1e-05` is no plain number (validation refuses the exponent): it becomes the
    number `0.00001`, written so (a `JsonNumber`: json.dumps of a float would write `1e-05`
    again, so it was made the text `"0.00001"` before numbers kept their text)."""
    rows = [_numbered(UsageRecord(0, "e", NOW, "api_requests", {"value": 1e-05}), 0)]
    for found in (by_rows(rows, fix_value_row), by_batch(rows, "meter_event_invalid_value")):
        assert found == [
            (
                "fixed",
                (NOW, int, "api_requests", [("value", 0.00001)]),
                [("normalize_value", "payload.value", 1e-05, 0.00001)],
            )
        ]
        written = found[0][2][0][3]
        assert (type(written), repr(written)) == (JsonNumber, "0.00001")


def test_a_value_within_the_precision_is_quarantined_not_rounded_to_itself() -> None:
    """Rounding that changes nothing is no correction (the row was sent again as it was, to be
    refused again); a rounded JSON number json.dumps would write with an exponent is written
    as its plain digits (a `JsonNumber`)."""
    rules = load_rules(RULES_TOML + "[policy]\nround_too_many_digits = true\nvalue_precision = 6\n")
    ctx = Context(MeterIndex(METERS), rules, NOW)
    values: list[object] = ["3.14", 3.14, 7, "3.14159265", 3.14159265, 0.0000123456, "3.1400000"]
    rows = [
        _numbered(UsageRecord(0, f"r{n}", NOW, "api_requests", {"value": value}), n)
        for n, value in enumerate(values)
    ]
    code = "meter_event_value_too_many_digits"
    for found in (by_rows(rows, round_value_row, ctx), by_batch(rows, code, ctx)):
        assert found[:3] == [
            ("quarantined", f"value {v!r} has at most 6 decimal places; nothing to round")
            for v in values[:3]
        ]
        assert [changes for _, _, changes in found[3:]] == [
            [("round_value", "payload.value", "3.14159265", "3.141593")],
            [("round_value", "payload.value", 3.14159265, 3.141593)],
            [("round_value", "payload.value", 0.0000123456, JsonNumber("0.000012"))],
            # only zeros past the precision: the same value written shorter, no rounding
            [("normalize_value", "payload.value", "3.1400000", "3.14")],
        ]


def test_a_customer_that_is_a_json_number_is_audited_and_named_as_it_came() -> None:
    """A JSON 12345 is looked up as "12345" and recorded as the number it was (it was the text
    "12345"); a JSON null is no customer text (it was looked up, and named, as "None")."""
    ctx = Context(MeterIndex(METERS), load_rules(RULES_TOML + '"12345" = "cus_9"\n'), NOW)
    customers: list[object] = [12345, "12345", True, None]
    rows = [
        _numbered(
            UsageRecord(0, f"c{n}", NOW, "api_requests", {"stripe_customer_id": c, "value": 1}),
            n,
        )
        for n, c in enumerate(customers)
    ]
    code = "meter_event_customer_not_found"
    for found in (by_rows(rows, fix_customer_row, ctx), by_batch(rows, code, ctx)):
        assert [changes for _, _, changes in found[:2]] == [
            [("map_customer", "payload.stripe_customer_id", 12345, "cus_9")],
            [("map_customer", "payload.stripe_customer_id", "12345", "cus_9")],
        ]
        assert found[2:] == [
            ("quarantined", f"customer {shown} is not in the customer map and has no unique match")
            for shown in ("true", "''")  # the JSON true as JSON spells it (it said `True`)
        ]


class _CountedPicks(CustomerPicks):
    """A run's kept picks that count the texts looked up in them one by one."""

    looked_up = 0

    def get(self, key: Any, default: Any = None) -> Any:
        self.looked_up += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> tuple[str, str] | None:
        self.looked_up += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.looked_up += 1
        return super().__contains__(key)


def _customer_rows(texts: list[str]) -> list[UsageRecord]:
    return [
        UsageRecord(n + 1, f"id{n}", NOW, "api_requests", {"stripe_customer_id": t, "value": 1})
        for n, t in enumerate(texts)
    ]


def test_customer_texts_picked_before_are_looked_up_for_the_batch_at_once() -> None:
    """A batch's customer texts the run has decided already are looked up on the column, not
    one by one in Python (a `varied` file's 113,000 such texts were 16 % of the deciding
    thread); texts met for the first time are decided once each, and what a batch gets is
    what the row function gives."""
    mapped = "".join(f'"ext-{n}" = "cus_{n}"\n' for n in range(300))
    rules = load_rules("[customers]\n" + mapped)
    picks = _CountedPicks()
    ctx = Context(MeterIndex(METERS), rules, NOW, customer_picks=picks)
    fresh = Context(MeterIndex(METERS), rules, NOW)
    texts = [f"ext-{n % 300}" for n in range(1500)] + ["nobody", " cus_7"] * 5
    code = "meter_event_customer_not_found"
    found = by_batch(_customer_rows(texts), code, ctx)
    assert found == by_rows(_customer_rows(texts), fix_customer_row, fresh)
    assert found[301][2] == [("map_customer", "payload.stripe_customer_id", "ext-1", "cus_1")]
    assert found[-1][2] == [("trim_customer", "payload.stripe_customer_id", " cus_7", "cus_7")]
    reason = "customer 'nobody' is not in the customer map and has no unique match"
    assert found[-2] == ("quarantined", reason)
    assert len(picks) == 302 and picks.looked_up <= 2 * 302  # a new text: kept? then keep it
    picks.looked_up = 0
    again = _customer_rows(texts[::-1])
    assert by_batch(again, code, ctx) == found[::-1]
    assert picks.looked_up == 0


def test_customer_texts_past_the_picks_a_run_keeps_are_decided_in_each_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a run keeps `PICKS_KEPT` picks, a new text is decided again in each batch that
    names it, with the same outcome as the row function's, and the kept picks stay those."""
    from remediation.core.rules import customers

    monkeypatch.setattr(customers, "PICKS_KEPT", 3)
    ctx = Context(MeterIndex(METERS), load_rules(RULES_TOML), NOW)
    texts = ["ext-1", " ext-2 ", "nobody", "ext-1 ", " CUS_3", "same", "blank", "", "cus_9"] * 3
    code = "meter_event_customer_not_found"
    for batch in (texts, texts[::-1], texts[4:]):
        found = by_batch(_customer_rows(batch), code, ctx)
        assert found == by_rows(_customer_rows(batch), fix_customer_row, CONTEXT)
        assert list(ctx.customer_picks) == ["ext-1", " ext-2 ", "nobody"]
    # texts[4:]: " CUS_3" trimmed, and "ext-1 " mapped once trimmed, neither of them kept
    assert found[0][2] == [("trim_customer", "payload.stripe_customer_id", " CUS_3", "cus_3")]
    assert found[8][2] == [("map_customer", "payload.stripe_customer_id", "ext-1 ", "cus_1")]


@pytest.mark.parametrize(
    ("code", "name", "reason"),
    [
        ("no_meter", "zzz_unknown", "no single active meter matches event_name 'zzz_unknown'"),
        ("no_meter", None, "no single active meter matches event_name ''"),
        ("archived_meter", "zzz_unknown", "no meter matches event_name 'zzz_unknown'"),
    ],
)
def test_rows_of_a_name_nothing_matches_are_refused_after_one_lookup(
    code: str, name: str | None, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose rows all name a meter that is gone: the match (a fuzzy one included) is
    made once for the name, and every row is refused with the row rule's reason (one row at
    a time, 1M such rows took 36 s, a fuzzy match each)."""
    from remediation.core.rules import meters

    calls: list[str] = []

    def counted(function: str) -> Any:
        real = getattr(meters, function)

        def spy(*args: Any) -> Any:
            calls.append(function)
            return real(*args)

        return spy

    for function in ("_pick_meter", "fix_event_name_row", "reroute_to_successor_row"):
        monkeypatch.setattr(meters, function, counted(function))
    ctx = Context(MeterIndex(METERS), load_rules(RULES_TOML), NOW)
    rows = [UsageRecord(n, f"id{n}", NOW, name, {"value": 1}) for n in range(1, 2001)]
    found = by_batch(rows, code, ctx)
    assert found == [("quarantined", reason)] * 2000
    assert len(calls) <= 2  # the match, and the row rule once for its reason
    assert by_batch(rows, code, ctx) == found and len(calls) <= 3  # the match kept for the run
    assert by_rows(rows[:3], dict(CASES)[code], ctx) == found[:3]


def test_iso_times_in_utc_are_read_on_the_column(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of ISO-8601 times (`...T...Z`) is read without the row rule (1M rows took 8.3 s
    one row at a time, 4.4 s so); what it gives is what the row rule gives."""
    from remediation.core.rules import timestamps

    calls: list[object] = []
    real = timestamps.fix_timestamp_row

    def counted(record: UsageRecord, ctx: Context) -> Any:
        calls.append(record.timestamp)
        return real(record, ctx)

    stamps = ["2025-11-24T16:30:00Z", "2025-11-20T00:00:00Z", "2024-02-29T00:00:00Z"]
    rows = [
        UsageRecord(n, f"id{n}", stamps[(n - 1) % 3], "api_requests", {"value": 1})
        for n in range(1, 301)
    ]
    expected = by_rows(rows, fix_timestamp_row)
    monkeypatch.setattr(timestamps, "fix_timestamp_row", counted)
    assert by_batch(rows, "timestamp_in_future") == expected
    assert calls == []
    assert expected[0] == (
        "fixed",
        (str(NOW), str, "api_requests", [("value", 1)]),
        [
            ("iso_timestamp", "timestamp", "2025-11-24T16:30:00Z", NOW + 1800),
            ("clamp_skew", "timestamp", NOW + 1800, NOW),
        ],
    )


def test_values_with_a_sign_no_number_holds_are_refused_on_the_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`$1,234.56`, `5%`, `3/4`: refused without the row rule (1M such values took 6.0 s one
    row at a time), with its reason; numbers beside them fixed as it fixes them."""
    from remediation.core.rules import values

    signed = ["$1,234.56", "5%", "3/4", "(12)", "€1,234.50", " 7 $", "'$3'", "1e3%", "12:00"]
    numbers = ["1e3", "12,345.50", "1 234", " 7 ", "'12'", "12.0", "1_000", "\uff11\uff12"]
    rows = [
        UsageRecord(n, f"id{n}", NOW, "api_requests", {"value": value})
        for n, value in enumerate(signed * 20 + numbers, 1)
    ]
    expected = by_rows(rows, fix_value_row)
    calls: list[object] = []
    real = values.fix_value_row

    def counted(record: UsageRecord, ctx: Context) -> Any:
        calls.append(record.payload.get("value"))
        return real(record, ctx)

    monkeypatch.setattr(values, "fix_value_row", counted)
    assert by_batch(rows, "meter_event_invalid_value") == expected
    assert set(calls) <= set(numbers)  # the signed ones never reach the row rule
    assert expected[0] == ("quarantined", "value '$1,234.56' is not a number")
