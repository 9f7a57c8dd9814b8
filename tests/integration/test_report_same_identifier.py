"""An error report's run over a usage file holding an identifier twice: one row Stripe took
(valid, not in the report), one it refused (reported). Stripe billed the identifier from the
row it took; the reported row, corrected as `<id>-mfx1`, would bill it a second time. Real
sandbox (events and Files API), a file:// bucket, both databases."""

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
TWICE = (
    "which is valid and not re-sent: Stripe took one event under it, a second would be "
    "billed twice; not corrected"
)


def _report(svc: Service, sampled: list[str], count: int) -> dict[str, object]:
    """Stripe's report of `count` rows in the future, sampling `sampled`."""
    meter = svc.sandbox.admin.meters()[0]["id"]
    event = build_error_report_event(meter, [(FUTURE, "in the future", i) for i in sampled])
    reason = event["data"]["reason"]
    reason["error_count"] = reason["error_types"][0]["error_count"] = count
    return event


@pytest.mark.parametrize(
    ("valid_first", "beside"), [(True, "an earlier row's"), (False, "row 3's")]
)
def test_a_reported_row_sharing_its_identifier_with_a_row_stripe_took_is_quarantined(
    service: Service, valid_first: bool, beside: str
) -> None:
    """day.csv holds s1 and k1 in milliseconds (Stripe refused them: the report samples s1 and
    counts 2) and k1 valid, which Stripe took and billed. The report's run selected s1 and the
    k1 in milliseconds; the valid k1, not the report's, never reached the decider: the run
    wrote s1-mfx1 and k1-mfx1, and k1 was billed twice. k1 is quarantined as a usage file's
    run quarantines it (its reason names the valid row), s1 corrected."""
    now = int(time.time()) - 60
    valid = f"k1,{now},api_requests,cus_1,5\n"
    refused = f"k1,{now * 1000},api_requests,cus_1,7\n"
    rows = [valid, refused] if valid_first else [refused, valid]
    bucket = _bucket(service)
    (bucket / "day.csv").write_text(
        HEADER + f"s1,{now * 1000},api_requests,cus_1,3\n" + "".join(rows)
    )
    _imported(service, "day.csv", ["s1", "k1"])

    service.deliver(_report(service, ["s1"], 2))
    service.drain()

    [corrected] = (bucket / "corrected").rglob("day.corrected.r1.csv")
    assert corrected.read_text().splitlines()[1:] == [f"s1-mfx1,{now},api_requests,cus_1,3"]
    [row] = service.rows(QuarantinedRow)
    assert (row.identifier, row.code) == ("k1", FUTURE)
    assert row.reason == f"identifier 'k1' is also {beside}, {TWICE}"
    [run] = service.rows(RemediationRun)
    assert (run.input_rows, run.valid, run.corrected, run.quarantined) == (2, 0, 1, 1)
    [report] = service.rows(ErrorReport)
    assert report.status == "remediated"


@pytest.mark.parametrize("selected_after", [False, True])
def test_a_row_stripe_took_batches_after_the_reported_row_is_known_to_the_run(
    service: Service, monkeypatch: pytest.MonkeyPatch, selected_after: bool
) -> None:
    """The valid k1 is many batches after the reported k1: after the last row the report is
    about, or with one (s2) after it. Read in batches of 16 rows, the run quarantines k1 all
    the same, naming the valid row; every other row is read and none counted."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 512)
    monkeypatch.setattr(batching, "RECORD_BATCH_ROWS", 16)
    now = int(time.time()) - 60
    filler = "".join(f"f{n},{now - n},api_requests,cus_1,1\n" for n in range(100))
    content = (
        f"s1,{now * 1000},api_requests,cus_1,3\nk1,{now * 1000},api_requests,cus_1,7\n"
        + filler
        + f"k1,{now},api_requests,cus_1,5\n"
        + filler.replace("f", "g")
        + (f"s2,{now * 1000},api_requests,cus_1,4\n" if selected_after else "")
    )
    bucket = _bucket(service)
    (bucket / "day.csv").write_text(HEADER + content)
    _imported(service, "day.csv", ["s1", "k1"])

    service.deliver(_report(service, ["s1"], 3 if selected_after else 2))
    service.drain()

    [corrected] = (bucket / "corrected").rglob("day.corrected.r1.csv")
    expected = [f"s1-mfx1,{now},api_requests,cus_1,3"]
    expected += [f"s2-mfx1,{now},api_requests,cus_1,4"] if selected_after else []
    assert corrected.read_text().splitlines()[1:] == expected
    [row] = service.rows(QuarantinedRow)
    assert (row.identifier, row.code) == ("k1", FUTURE)
    assert row.reason == f"identifier 'k1' is also row 103's, {TWICE}"
    [run] = service.rows(RemediationRun)
    assert (run.valid, run.corrected, run.quarantined) == (0, len(expected), 1)
