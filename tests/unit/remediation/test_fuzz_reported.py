"""Property: an error report never selects a row Stripe may have billed.

Stripe's documented rules for the checks that depend on when it took a row (it refuses a
timestamp more than 5 minutes after that moment or more than 35 days before it, and any row
of a meter inactive then) are the oracle: for random rows, meters archived at random times,
random bounds (`Taken`) and a random moment within them, every row `select_reported` picks
without Stripe having sampled it must have been refused at that moment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.reported import ReportScope, Taken, select_reported
from remediation.validation import MAX_FUTURE_SECONDS, MAX_PAST_SECONDS, MeterIndex
from tests.fuzz import fuzz_settings

BASE = 1_764_000_000
DAY = 86_400
CODES = frozenset({"timestamp_in_future", "timestamp_too_far_in_past", "archived_meter"})

offsets = st.one_of(
    st.integers(-40 * DAY, 2 * DAY),
    st.sampled_from([-MAX_PAST_SECONDS, MAX_FUTURE_SECONDS, 0, 1, -1]),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Taken, int, Meter, list[UsageRecord]]:
    earliest = draw(st.none() | st.integers(BASE - 2 * DAY, BASE))
    latest = draw(st.integers(BASE, BASE + 2 * DAY))
    low = earliest if earliest is not None else BASE - 3 * DAY
    moment = draw(st.integers(low, latest))  # when Stripe took the rows
    # active, archived at a known moment, or archived when Stripe does not say
    archived = draw(st.none() | st.integers(BASE - 3 * DAY, BASE + 3 * DAY) | st.just(-1))
    status = "active" if archived is None else "inactive"
    known = None if archived is None or archived < 0 else archived
    meter = Meter("mtr_1", "api_requests", status=status, deactivated_at=known)
    taken = Taken(latest=latest, earliest=earliest)
    stamps = draw(st.lists(st.tuples(st.sampled_from([BASE, low, latest]), offsets), max_size=8))
    records = [
        UsageRecord(
            n,
            f"r{n}",
            anchor + offset,
            "api_requests",
            {"stripe_customer_id": "cus_1", "value": "1"},
        )
        for n, (anchor, offset) in enumerate(stamps, start=1)
    ]
    return taken, moment, meter, records


def refused_then(record: UsageRecord, meter: Meter, moment: int) -> bool:
    """What Stripe did with the row at `moment` (its documented checks that depend on it): a
    meter archived at a moment Stripe does not give may have been active then."""
    if meter.deactivated_at is not None and meter.deactivated_at <= moment:
        return True
    assert isinstance(record.timestamp, int)
    too_late = record.timestamp > moment + MAX_FUTURE_SECONDS
    return too_late or record.timestamp < moment - MAX_PAST_SECONDS


@fuzz_settings(300)
@given(case=cases())
def test_a_report_selects_only_rows_refused_whenever_stripe_took_them(
    case: tuple[Taken, int, Meter, list[UsageRecord]],
) -> None:
    taken, moment, meter, records = case
    scope = ReportScope(CODES, {}, "api_requests")
    chosen = select_reported(records, scope, MeterIndex([meter]), taken, set())
    for record in chosen:
        assert refused_then(record, meter, moment), (record, record.error_code, moment)
