"""An error report sampling an identifier its usage file holds twice. Stripe dedupes by
identifier: of the rows under `k1` it took at most one event. The report's run matched the
sample by identifier alone, so it selected every row under `k1`: the valid row Stripe took
went out again and the refused one corrected, both as `k1-mfx1` (Stripe keeps the first:
the valid usage billed twice, the refused row's never). Only the rows the report's code fits
are the report's; a row Stripe took is passed over (taken), and a refused row under its
identifier is quarantined under `identifier_taken`. Of rows all refused, one goes out.
Real sandbox (events and Files API), a file:// bucket, both databases."""

# ruff: noqa: F811  (the fixture imported from the module that defines it)
from __future__ import annotations

import time

import pytest

from remediation import batching
from sandbox.events import build_error_report_event
from service.models import ErrorReport, QuarantinedRow, RemediationRun
from tests.integration.test_remediation_tasks import Service, service  # noqa: F401
from tests.integration.test_report_edges import HEADER, _bucket, _imported

FUTURE = "timestamp_in_future"
NOT_FOUND = "meter_event_customer_not_found"
TAKEN = "identifier_taken"
TWICE = (
    "which is valid and not re-sent: Stripe took one event under it, a second would be "
    "billed twice; not corrected"
)


def _report(svc: Service, sampled: list[tuple[str, str]], count: int) -> dict[str, object]:
    """Stripe's report of `count` rows, sampling (identifier, code) pairs."""
    meter = svc.sandbox.admin.meters()[0]["id"]
    event = build_error_report_event(meter, [(code, code, i) for i, code in sampled])
    reason = event["data"]["reason"]
    reason["error_count"] = reason["error_types"][0]["error_count"] = count  # one code
    return event


def _corrected(svc: Service) -> list[str]:
    found = list((_bucket(svc) / "corrected").rglob("day.corrected.r1.csv"))
    return [line for path in found for line in path.read_text().splitlines()[1:]]


def _held(svc: Service) -> list[tuple[str | None, int, str, object, str]]:
    """The quarantined rows: identifier, row, code (the one it arrived with), ours, reason."""
    rows = sorted(_quarantined(svc), key=lambda row: row.row_number)
    return [(r.identifier, r.row_number, r.code, r.record["mfx_code"], r.reason) for r in rows]


def _quarantined(svc: Service) -> list[QuarantinedRow]:
    return [row for row in svc.rows(QuarantinedRow) if isinstance(row, QuarantinedRow)]


@pytest.mark.parametrize(
    ("valid_first", "refused_row", "beside"), [(True, 3, "an earlier row's"), (False, 2, "row 3's")]
)
def test_a_sampled_identifier_also_held_by_a_row_stripe_took_is_quarantined(
    service: Service, valid_first: bool, refused_row: int, beside: str
) -> None:
    """day.csv holds s1 and k1 in milliseconds (refused, both sampled) and k1 valid (Stripe
    took and billed it). The run selected both k1 rows by the sample: it wrote k1-mfx1 twice
    (the valid row as it was, the other corrected), billing k1's usage a second time. The
    valid k1 is passed over; the refused k1 is quarantined under identifier_taken."""
    now = int(time.time()) - 60
    valid = f"k1,{now},api_requests,cus_1,5\n"
    refused = f"k1,{now * 1000},api_requests,cus_1,7\n"
    rows = [valid, refused] if valid_first else [refused, valid]
    (_bucket(service) / "day.csv").write_text(
        HEADER + f"s1,{now * 1000},api_requests,cus_1,3\n" + "".join(rows)
    )
    _imported(service, "day.csv", ["s1", "k1"])

    service.deliver(_report(service, [("s1", FUTURE), ("k1", FUTURE)], 2))
    service.drain()

    assert _corrected(service) == [f"s1-mfx1,{now},api_requests,cus_1,3"]
    assert _held(service) == [
        ("k1", refused_row, FUTURE, TAKEN, f"identifier 'k1' is also {beside}, {TWICE}")
    ]
    [held] = _quarantined(service)
    assert held.record["timestamp"] == str(now * 1000)
    [run] = service.rows(RemediationRun)
    assert (run.input_rows, run.valid, run.corrected, run.quarantined) == (2, 0, 1, 1)
    [report] = service.rows(ErrorReport)
    assert report.status == "remediated"


def test_a_sampled_identifier_held_by_the_report_and_a_row_stripe_took_batches_apart(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The valid k1 100 rows after the refused k1, read in batches of 16 rows: the refused
    k1 is quarantined all the same, naming the valid row."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 512)
    monkeypatch.setattr(batching, "RECORD_BATCH_ROWS", 16)
    now = int(time.time()) - 60
    filler = "".join(f"f{n},{now - n},api_requests,cus_1,1\n" for n in range(100))
    (_bucket(service) / "day.csv").write_text(
        HEADER
        + f"s1,{now * 1000},api_requests,cus_1,3\nk1,{now * 1000},api_requests,cus_1,7\n"
        + filler
        + f"k1,{now},api_requests,cus_1,5\n"
    )
    _imported(service, "day.csv", ["s1", "k1"])

    service.deliver(_report(service, [("s1", FUTURE), ("k1", FUTURE)], 2))
    service.drain()

    assert _corrected(service) == [f"s1-mfx1,{now},api_requests,cus_1,3"]
    assert _held(service) == [
        ("k1", 2, FUTURE, TAKEN, f"identifier 'k1' is also row 103's, {TWICE}")
    ]
    [run] = service.rows(RemediationRun)
    assert (run.input_rows, run.valid, run.corrected, run.quarantined) == (2, 0, 1, 1)


@pytest.mark.parametrize("apart", [False, True])
def test_of_rows_all_refused_under_a_sampled_identifier_the_first_goes_out(
    service: Service, monkeypatch: pytest.MonkeyPatch, apart: bool
) -> None:
    """Both k1 rows are in milliseconds: Stripe refused both and billed nothing under k1.
    Both corrected, they went out as k1-mfx1 twice: Stripe keeps one event an identifier
    (the second refused as a duplicate, or billed again past its dedupe window), as it would
    have kept the first of the file's two had both been valid. The first goes out; the other
    is quarantined under identifier_taken, naming it (never sent by a re-run). In one batch
    or 100 rows apart in batches of 16."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 512)
    monkeypatch.setattr(batching, "RECORD_BATCH_ROWS", 16)
    now = int(time.time()) - 60
    filler = "".join(f"f{n},{now - n},api_requests,cus_1,1\n" for n in range(100 if apart else 0))
    (_bucket(service) / "day.csv").write_text(
        HEADER
        + f"s1,{now * 1000},api_requests,cus_1,3\nk1,{now * 1000},api_requests,cus_1,7\n"
        + filler
        + f"k1,{now * 1000},api_requests,cus_1,4\n"
    )
    _imported(service, "day.csv", ["s1", "k1"])

    service.deliver(_report(service, [("s1", FUTURE), ("k1", FUTURE)], 3))
    service.drain()

    assert _corrected(service) == [
        f"s1-mfx1,{now},api_requests,cus_1,3",
        f"k1-mfx1,{now},api_requests,cus_1,7",
    ]
    second = 103 if apart else 3
    assert _held(service) == [
        (
            "k1",
            second,
            TAKEN,
            TAKEN,
            "identifier 'k1' is also row 2's, which Stripe refused too and this run takes: "
            "Stripe keeps one event an identifier (it would have kept the first row's), so "
            "a second would be refused as a duplicate or billed twice; not corrected",
        )
    ]
    [held] = _quarantined(service)
    assert (held.record["timestamp"], held.record["payload"]) == (
        str(now * 1000),
        {"stripe_customer_id": "cus_1", "value": "4"},
    )
    [run] = service.rows(RemediationRun)
    assert (run.input_rows, run.valid, run.corrected, run.quarantined) == (3, 0, 2, 1)
    [report] = service.rows(ErrorReport)
    assert report.status == "remediated"


def test_rows_under_a_sampled_identifier_none_proven_refused_are_left_alone(
    service: Service,
) -> None:
    """Stripe could not find the customer of k1, and day.csv holds k1 twice, for acme-42 (our
    customer map knows it) and cus_1: which one Stripe refused, and whether it took the
    other, our checks cannot tell. The run corrected acme-42's k1 to k1-mfx1 (billed twice
    if Stripe took cus_1's k1) and took acme-42 for a customer Stripe did not find, selecting
    another row of it. Nothing goes out: the report is left short (partial, with an alert)."""
    now = int(time.time()) - 60
    (_bucket(service) / "day.csv").write_text(
        HEADER
        + f"k1,{now},api_requests,acme-42,7\n"
        + f"k1,{now},api_requests,cus_1,5\n"
        + f"a2,{now},api_requests,acme-42,2\n"
    )
    _imported(service, "day.csv", ["k1", "a2"])

    service.deliver(_report(service, [("k1", NOT_FOUND)], 1))
    service.drain()

    assert _corrected(service) == []
    assert _held(service) == []
    [report] = service.rows(ErrorReport)
    assert report.status == "partial"
