"""The column code finds what the row functions find: the batch checks the code the row check
(`validate_record`) finds, derived identifiers what `Identifiers.new` gives.

Random rows of every shape a reader gives: CSV text and JSON values of every kind (numbers,
floats, booleans, nulls, objects), in batches, so that the column checks meet mixed kinds.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.core.batch import from_records
from remediation.core.checks import code_objects, problem_ids
from remediation.core.columns import Column
from remediation.core.newids import new_identifiers
from remediation.core.textmeasures import longer, plain_numbers, short_digits
from remediation.identifiers import Ancestor, Identifiers, Lineage
from remediation.limits import FieldLimits
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.validation import MeterIndex, validate_record
from tests.fuzz import fuzz_examples

NOW = 1_764_000_000
SLOW = HealthCheck.too_slow
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
    st.sampled_from(["+5", "1.5", "1,000", "12:00", "\u00a017\u2003", "-\u00a05", "5e3", "x"]),
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


@settings(
    max_examples=fuzz_examples(600), suppress_health_check=[HealthCheck.too_slow], deadline=None
)
@given(rows=st.lists(records(), min_size=1, max_size=12), precision=st.sampled_from([None, 2]))
def test_fuzz_batch_checks_find_what_the_row_check_finds(
    rows: list[UsageRecord], precision: int | None
) -> None:
    rows = [UsageRecord(n, *vars_of(r)[1:]) for n, r in enumerate(rows, 1)]
    index = MeterIndex(METERS, value_precision=precision, limits=FieldLimits())
    expected = [p.code if (p := validate_record(r, index, NOW)) else None for r in rows]
    found = code_objects(problem_ids(from_records(rows), index, NOW)).tolist()
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


IDS = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "a-mfx2", "ours", "x" * 95, "y" * 99, "z" * 150, "é" * 97]),
    st.text(alphabet=st.sampled_from('ab-é"\\'), max_size=6),
)


@settings(max_examples=fuzz_examples(300), deadline=None)
@given(
    identifiers=st.lists(IDS, min_size=1, max_size=10),
    keep=st.booleans(),
    generation=st.integers(1, 3),
)
def test_fuzz_new_identifiers_on_a_column_are_the_row_rule(
    identifiers: list[str | None], keep: bool, generation: int
) -> None:
    """Derived identifiers built on a column are `Identifiers.new`'s, row by row (lineage,
    reserved originals, the hashed form past 100 characters, rows without one)."""
    lineage = Lineage({"ours": Ancestor("orig", "no_meter", 1)}, frozenset({"a-mfx2"}))
    ids = Identifiers("s3://b/usage.csv", generation, lineage, keep)
    rows = np.arange(1, len(identifiers) + 1, dtype=np.int64)
    found = new_identifiers(ids, Column(pa.array(identifiers, pa.string())), rows).to_pylist()
    assert found == [ids.new(i, int(r)) for i, r in zip(identifiers, rows, strict=True)]


@given(
    st.lists(st.none() | st.text(alphabet="a\u00e9\u20ac\U0001f600", max_size=6), max_size=20),
    st.integers(0, 8),
)
def test_longer_counts_characters_as_len(values: list[str | None], most: int) -> None:
    """Past `most` characters as `len()` counts them (bytes only narrow the rows counted),
    on a column and on rows taken from it (which carry its byte counts)."""
    column = Column(pa.array(values, pa.string()))
    expected = [v is not None and len(v) > most for v in values]
    assert longer(column, most).tolist() == expected
    assert longer(column, most).tolist() == expected  # the counts are kept, not changed
    picks = np.arange(len(values))[::-1].copy()
    assert longer(column.take(picks), most).tolist() == expected[::-1]


DIGITISH = st.text(alphabet="0123456789-.,+ e\u0663\u00b2\uff11a", max_size=24)


@given(
    st.lists(
        st.none() | DIGITISH | st.integers(0, 10**20).map(str) | st.just("9" * 19), max_size=20
    )
)
def test_number_shapes_are_the_regexes(values: list[str | None]) -> None:
    """Seconds of at most 18 ASCII digits and plain numbers, found without a regex over every
    row, are exactly what the regexes find (Unicode digits are neither; absent is neither), on
    a column and on rows taken from it."""
    column = Column(pa.array(values, pa.string()))
    short = [v is not None and re.fullmatch("[0-9]{1,18}", v) is not None for v in values]
    plain = [v is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", v) is not None for v in values]
    assert short_digits(column).tolist() == short
    assert plain_numbers(column).tolist() == plain
    picks = np.arange(len(values))[::-1].copy()
    assert short_digits(column.take(picks)).tolist() == short[::-1]
    assert plain_numbers(column.take(picks)).tolist() == plain[::-1]


def test_seconds_are_what_parse_timestamp_reads_for_every_text() -> None:
    """Texts known unreadable on the column (a letter, a colon...) and the rest, read one by
    one, give what `parse_timestamp` gives each."""
    from remediation.core.checks import seconds
    from remediation.core.columns import Column
    from remediation.fieldvalues import parse_timestamp

    texts = [str(NOW), "2026-11-30T10:00:00Z", "-5", "²", " 17 ", "\u00a017\u2003", "-\u00a05"]
    texts += ["+5", "1.5", "1,000", "12:00", "5e3", "x", "", "9" * 25, " -17", None]
    values, known, rest = seconds(Column.of(texts))
    got = {i: int(values[i]) for i in range(len(texts)) if known[i]} | dict(rest)
    assert got == {i: parse_timestamp(t) for i, t in enumerate(texts) if t is not None}
