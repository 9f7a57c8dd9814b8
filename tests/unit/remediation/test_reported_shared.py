"""A sampled identifier an object holds more than once (`ReportScope.shared`): its rows are
the report's only when our validation finds the report's code in them (Stripe took at most
one event under it); of rows all refused, the first goes out and the others are held under
`identifier_taken`."""

from __future__ import annotations

from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.reported import (
    ReportScope,
    Selection,
    Taken,
    refused_under,
    sampled_rows,
    select_reported,
    taken_under,
)
from remediation.validation import MeterIndex

NOW = 1_764_000_000
TAKEN = Taken(latest=NOW + 3600, earliest=NOW, at_once=True)
FUTURE, NOT_FOUND = "timestamp_in_future", "meter_event_customer_not_found"
INDEX = MeterIndex([Meter("mtr_1", "api_requests")])


def row(number: int, identifier: str, timestamp: int = NOW, customer: str = "cus_1") -> UsageRecord:
    payload = {"stripe_customer_id": customer, "value": "5"}
    return UsageRecord(number, identifier, timestamp, "api_requests", payload)


def chosen(records: list[UsageRecord], samples: dict[str, str]) -> list[tuple[int, str | None]]:
    first = ReportScope(frozenset(samples.values()), samples, "api_requests")
    found = sampled_rows(records, first, INDEX)
    scope = ReportScope(first.codes, samples, "api_requests", shared=frozenset(found.shared))
    picked = select_reported(records, scope, INDEX, TAKEN, found.customers, Selection())
    return [(record.row_number, record.error_code) for record in picked]


def test_a_row_stripe_took_under_a_sampled_identifier_is_passed_over() -> None:
    records = [row(1, "k1"), row(2, "k1", NOW * 1000), row(3, "s1", NOW * 1000)]
    assert chosen(records, {"k1": FUTURE, "s1": FUTURE}) == [(2, FUTURE), (3, FUTURE)]


def test_of_rows_all_refused_under_a_sampled_identifier_the_first_goes_out() -> None:
    records = [row(1, "k1", NOW * 1000), row(2, "k1", NOW * 1000), row(3, "k1", NOW * 1000)]
    picked = select_reported(
        records,
        ReportScope(frozenset({FUTURE}), {"k1": FUTURE}, "api_requests", shared=frozenset({"k1"})),
        INDEX,
        TAKEN,
        set(),
        Selection(),
    )
    held = [(r.row_number, r.error_code, r.error_message) for r in picked]
    assert [(n, code) for n, code, _ in held] == [
        (1, FUTURE),
        (2, "identifier_taken"),
        (3, "identifier_taken"),
    ]
    assert [message for _, _, message in held][1:] == [
        "identifier 'k1' is also row 1's, which Stripe refused too and this run takes: Stripe "
        "keeps one event an identifier (it would have kept the first row's), so a second would "
        "be refused as a duplicate or billed twice; not corrected"
    ] * 2


def test_a_sampled_identifier_held_once_is_the_report_s_whatever_validation_says() -> None:
    assert chosen([row(1, "k1")], {"k1": NOT_FOUND}) == [(1, NOT_FOUND)]
    assert (
        sampled_rows([row(1, "k1")], ReportScope(frozenset(), {"k1": FUTURE}, None), INDEX).shared
        == set()
    )


def test_customers_of_a_shared_sampled_identifier_count_only_when_its_rows_agree() -> None:
    scope = ReportScope(frozenset({NOT_FOUND}), {"k1": NOT_FOUND}, "api_requests")
    apart = [row(1, "k1", customer="acme-42"), row(2, "k1", customer="cus_1")]
    found = sampled_rows(apart, scope, INDEX)
    assert (found.shared, found.customers) == ({"k1"}, set())
    assert chosen([*apart, row(3, "a2", customer="acme-42")], {"k1": NOT_FOUND}) == []
    alike = [row(1, "k1", customer="acme-42"), row(2, "k1", customer="acme-42")]
    assert sampled_rows(alike, scope, INDEX).customers == {"acme-42"}
    assert chosen(alike, {"k1": NOT_FOUND}) == [(1, NOT_FOUND), (2, "identifier_taken")]


def test_a_row_refused_for_a_problem_the_report_does_not_count_is_not_one_stripe_took() -> None:
    """A row our validation proves Stripe refused (a value that is text) is not one it took,
    whatever the report's codes: k1's was (the report is about timestamps), and a refused row
    of another object under k1 was held as "a row that Stripe took (not refused)", never
    billed. A valid row under an identifier is taken, beside a refused one or not."""
    lots = row(1, "k1")
    lots.payload["value"] = "lots"
    also = row(3, "k2")
    also.payload["value"] = "lots"
    beside = row(5, "k3")
    beside.payload["value"] = "lots"
    records = [lots, row(2, "k2"), also, row(4, "k3", NOW * 1000), beside]
    shared = frozenset({"k1", "k2", "k3"})
    scope = ReportScope(frozenset({FUTURE}), {"k3": FUTURE}, "api_requests", shared=shared)
    assert taken_under(records, scope, INDEX, TAKEN, set()) == {"k2"}
    # k3's row 4 is the report's (its code fits): it goes first, the object's runs hold row 5
    assert refused_under(records, scope, INDEX, TAKEN, set()) == {"k1": 1, "k2": 3}
