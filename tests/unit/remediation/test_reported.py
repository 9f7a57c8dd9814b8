"""Which rows of an imported object an error report selects: only rows our validation proves
Stripe refused whenever it took the object (`Taken`), never a row it may have billed."""

from __future__ import annotations

import pytest

from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.reported import ReportScope, Taken, sampled_rows, select_reported
from remediation.validation import MAX_PAST_SECONDS, MeterIndex

WINDOW_START, WINDOW_END = 1_764_000_000, 1_764_003_600  # the report's hour
UPLOADED = WINDOW_START - 600
DAY = 86_400
LINKED = Taken(latest=WINDOW_END, earliest=WINDOW_START, at_once=True)
SEARCHED = Taken(latest=WINDOW_END + DAY, earliest=UPLOADED)
ALL_CODES = frozenset(
    {
        "timestamp_in_future",
        "timestamp_too_far_in_past",
        "archived_meter",
        "meter_event_customer_not_found",
        "meter_event_invalid_value",
    }
)


def row(identifier: str, timestamp: object = WINDOW_START, **payload: object) -> UsageRecord:
    values = {"stripe_customer_id": "cus_alice", "value": "5", **payload}
    return UsageRecord(1, identifier, timestamp, "api_requests", values)


def selected(
    records: list[UsageRecord],
    taken: Taken,
    meter: Meter | None = None,
    samples: dict[str, str] | None = None,
    customers: set[str] | None = None,
) -> dict[str, str | None]:
    scope = ReportScope(ALL_CODES, samples or {}, "api_requests")
    index = MeterIndex([meter or Meter("mtr_1", "api_requests")])
    chosen = select_reported(records, scope, index, taken, customers or set())
    return {record.identifier or "": record.error_code for record in chosen}


def test_a_timestamp_in_the_future_counts_against_the_latest_time_stripe_took_the_object() -> None:
    skew = row("skew", WINDOW_END + 600)  # 10 minutes past the window's end
    millis = row("ms", WINDOW_START * 1000)
    # an object holding sampled rows was taken in the window: the skewed row was refused
    assert selected([skew, millis], LINKED) == {
        "skew": "timestamp_in_future",
        "ms": "timestamp_in_future",
    }
    # an object only searched may have been taken later, when the row was no longer ahead
    assert selected([row("skew", WINDOW_END + 600), row("ms", WINDOW_START * 1000)], SEARCHED) == {
        "ms": "timestamp_in_future"
    }


def test_a_timestamp_too_far_in_the_past_counts_against_the_earliest_time() -> None:
    """Stripe refuses a row older than 35 days when it takes it: a row 35 days and 10 minutes
    before the window's end was within them when Stripe took it at the window's start (the
    report's end was the reference before, and the billed row was quarantined)."""
    billed = row("billed", WINDOW_END - MAX_PAST_SECONDS - 600)
    old = row("old", WINDOW_START - MAX_PAST_SECONDS - 600)
    assert selected([billed, old], LINKED) == {"old": "timestamp_too_far_in_past"}
    unknown = Taken(latest=WINDOW_END, earliest=None)
    old = row("old", WINDOW_START - MAX_PAST_SECONDS - 600)
    assert selected([old], unknown) == {}  # when it was uploaded is unknown: no proof


@pytest.mark.parametrize(
    ("deactivated_at", "taken", "chosen"),
    [
        (UPLOADED - 1, SEARCHED, True),  # archived before the object was uploaded
        (UPLOADED, SEARCHED, False),  # in the same second: Stripe may have taken it first
        (UPLOADED + 60, SEARCHED, False),  # archived after: Stripe may have billed the rows
        (None, SEARCHED, False),  # when is unknown
        (WINDOW_START - 1, LINKED, True),
        (WINDOW_START + 60, LINKED, False),  # archived within the window, no sample says so
        (
            WINDOW_START + 60,
            Taken(WINDOW_END, WINDOW_START, frozenset({"archived_meter"}), True),
            True,
        ),
        # rows sent batch by batch: a sampled row says nothing of the rows sent before it
        (WINDOW_START + 60, Taken(WINDOW_END, WINDOW_START, frozenset({"archived_meter"})), False),
        (UPLOADED - 1, Taken(WINDOW_END + DAY, None), False),
    ],
)
def test_an_archived_meter_counts_only_when_it_was_archived_before_stripe_took_the_rows(
    deactivated_at: int | None, taken: Taken, chosen: bool
) -> None:
    meter = Meter("mtr_1", "api_requests", status="inactive", deactivated_at=deactivated_at)
    expected = {"r": "archived_meter"} if chosen else {}
    assert selected([row("r")], taken, meter) == expected


def test_sampled_rows_are_selected_with_stripes_code_whatever_the_time() -> None:
    meter = Meter("mtr_1", "api_requests", status="inactive", deactivated_at=None)
    samples = {"s": "archived_meter", "t": "timestamp_in_future"}
    records = [row("s"), row("t", WINDOW_START), row("other")]
    assert selected(records, LINKED, meter, samples) == {
        "s": "archived_meter",
        "t": "timestamp_in_future",
    }


def test_a_customer_stripe_did_not_find_counts_in_another_object_only_if_it_never_can_be_one() -> (
    None
):
    customers = {"cus_gone", "acme-42"}
    records = [
        row("deleted", stripe_customer_id="cus_gone"),
        row("external", stripe_customer_id="acme-42"),
        row("fine", stripe_customer_id="cus_alice"),
    ]
    code = "meter_event_customer_not_found"
    assert selected(records, LINKED, customers=customers) == {"deleted": code, "external": code}
    # an object found by the search: a `cus_` customer may have existed when Stripe took it
    assert selected(records, SEARCHED, customers=customers) == {"external": code}


def test_sampled_rows_give_their_codes_and_the_customers_stripe_did_not_find() -> None:
    scope = ReportScope(
        ALL_CODES, {"a": "meter_event_customer_not_found", "b": "archived_meter"}, None
    )
    records = [row("a", stripe_customer_id="acme-42"), row("b"), row("c")]
    found = sampled_rows(records, scope, MeterIndex([Meter("mtr_1", "api_requests")]))
    assert (found.codes, found.customers) == (
        {"meter_event_customer_not_found", "archived_meter"},
        {"acme-42"},
    )


def test_a_meter_keeps_when_stripe_archived_it() -> None:
    obj = {
        "id": "mtr_1",
        "event_name": "api_requests",
        "status": "inactive",
        "status_transitions": {"deactivated_at": 1_764_000_000},
    }
    assert Meter.from_stripe(obj).deactivated_at == 1_764_000_000
    assert (
        Meter.from_stripe({**obj, "status_transitions": {"deactivated_at": None}}).deactivated_at
        is None
    )
    assert Meter.from_stripe({"id": "m", "event_name": "e"}).deactivated_at is None


def test_rows_sent_in_order_after_a_sampled_row_share_its_unknown_customer() -> None:
    """The bundled poller sends an object's rows in row order: a customer Stripe did not
    know for a sampled row (deleted, or never made) was unknown for every row sent after it,
    while a row sent before it may have been billed."""
    customers = {"cus_gone"}
    records = [
        UsageRecord(n, f"r{n}", WINDOW_START, "api_requests", {"stripe_customer_id": "cus_gone"})
        for n in range(1, 6)
    ]
    for record in records:
        record.payload["value"] = "5"
    in_order = Taken(latest=WINDOW_END + DAY, earliest=UPLOADED, gone_from={"cus_gone": 3})
    code = "meter_event_customer_not_found"
    assert selected(records, in_order, customers=customers) == {"r3": code, "r4": code, "r5": code}
    elsewhere = Taken(latest=WINDOW_END + DAY, earliest=UPLOADED, gone_from={"cus_other": 1})
    assert selected(records, elsewhere, customers=customers) == {}


def test_sampled_rows_give_the_first_row_of_each_customer_stripe_did_not_find() -> None:
    samples = {"b": "meter_event_customer_not_found", "d": "meter_event_customer_not_found"}
    scope = ReportScope(ALL_CODES, samples, None)
    records = [
        UsageRecord(n, name, WINDOW_START, "api_requests", {"stripe_customer_id": "cus_gone"})
        for n, name in enumerate("abcd", start=1)
    ]
    found = sampled_rows(records, scope, MeterIndex([Meter("mtr_1", "api_requests")]))
    assert found.first_row == {"cus_gone": 2}
