"""The batch checks find, for every row, the code the row check (`validate_record`) finds.

Random rows of every shape a reader gives: CSV text and JSON values of every kind (numbers,
floats, booleans, nulls, objects), in batches, so that the column checks meet mixed kinds.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.core.checks import problem_codes
from remediation.core.columns import from_records
from remediation.limits import FieldLimits
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.validation import MeterIndex, validate_record

NOW = 1_764_000_000
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "old", status="inactive"),
    Meter("m3", "tokens", customer_key="customer", value_key="tokens", dimension_keys=("model",)),
]
CLEAN = st.text(alphabet=st.sampled_from("a1-. ,é_"), max_size=8)
TEXT = st.one_of(
    CLEAN, CLEAN, CLEAN, st.text(alphabet=st.sampled_from("a\t\x00\u2028"), max_size=3)
)
NUMBERS = st.one_of(
    st.integers(-(10**22), 10**22),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", "1,234", "0012.50", "-3", "1e5", "", " 7 ", "x" * 120, "9" * 25]),
)
VALUES = st.one_of(NUMBERS, TEXT, st.booleans(), st.none(), st.just({"a": 1}), st.just([1]))
STAMPS = st.one_of(
    st.none(),
    st.integers(NOW - 40 * 86_400, NOW * 10**6),
    st.sampled_from([str(NOW), str(NOW * 1000), "2026-11-30T10:00:00Z", "-5", "²", " 17 ", ""]),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e20, max_value=1e20),
    st.booleans(),
    TEXT,
)
KEYS = st.sampled_from(["stripe_customer_id", "value", "customer", "tokens", "model", "extra"])


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    payload = draw(st.dictionaries(KEYS, VALUES, min_size=1, max_size=4))
    return UsageRecord(
        0,
        draw(st.one_of(st.just("id1"), st.none(), TEXT, st.just("i" * 101))),
        draw(STAMPS),
        draw(st.sampled_from(["api_requests", "api_requests", "old", "tokens", "nope", None])),
        payload,
        draw(st.dictionaries(st.sampled_from(["note", "customer_id"]), TEXT, max_size=2)),
        malformed=draw(st.sampled_from([None, None, None, "row has 3 fields, header has 5"])),
    )


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(rows=st.lists(records(), min_size=1, max_size=12), precision=st.sampled_from([None, 2]))
def test_batch_checks_find_what_the_row_check_finds(
    rows: list[UsageRecord], precision: int | None
) -> None:
    rows = [UsageRecord(n, *vars_of(r)[1:]) for n, r in enumerate(rows, 1)]
    index = MeterIndex(METERS, value_precision=precision, limits=FieldLimits())
    expected = [p.code if (p := validate_record(r, index, NOW)) else None for r in rows]
    found = problem_codes(from_records(rows), index, NOW).tolist()
    assert found == expected


def vars_of(record: UsageRecord) -> tuple[object, ...]:
    return (
        record.row_number,
        record.identifier,
        record.timestamp,
        record.event_name,
        record.payload,
        record.extra,
        record.error_code,
        record.error_message,
        record.malformed,
    )
