"""An input that is not rejected-only may hold rows Stripe billed: its valid rows are written
nowhere. Stripe dedupes by identifier, so a row to be corrected under the identifier of a valid
row (billed: Stripe took one event under it) is quarantined, not re-sent as `<id>-mfx1`,
wherever the valid row is (before or after it, in its batch or another). Rejected-only inputs
are unchanged: all their rows go out."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation import batching
from remediation.core import sameids
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.outcomes import QuarantinedRow, corrections_of
from remediation.records import UsageRecord
from tests.unit.remediation.test_csv_columns import HEADER, METERS, NOW, RULES
from tests.unit.remediation.test_engine import METERS as ENGINE_METERS
from tests.unit.remediation.test_engine import RULES as ENGINE_RULES
from tests.unit.remediation.test_engine import rec
from tests.unit.remediation.test_resend import usage_csv

USAGE_HEADER = HEADER[:6]
VALID = ["k1", str(NOW - 60), "api_requests", "cus_1", "5", ""]
IN_MS = ["k1", str((NOW - 60) * 1000), "api_requests", "cus_1", "5", ""]  # corrected alone
THOUSANDS = ["t1", str(NOW - 60), "api_requests", "cus_1", "1,234", ""]  # corrected alone
FILLER = [[f"f{n}", str(NOW - n), "api_requests", "cus_1", "1", ""] for n in range(300)]
REASON = (
    "identifier 'k1' is also row {}'s, which is valid and not re-sent: Stripe took one event "
    "under it, a second would be billed twice; not corrected"
)


def as_input(rows: list[list[str]], fmt: FileFormat, header: list[str] = USAGE_HEADER) -> bytes:
    if fmt is FileFormat.CSV:
        return usage_csv(rows, header)
    objects = []
    for row in rows:
        named = dict(zip(header, row, strict=True))
        item: dict[str, Any] = {
            "identifier": named["identifier"],
            "timestamp": int(named["timestamp"]),
            "event_name": named["event_name"],
            "payload": {"stripe_customer_id": named["payload_stripe_customer_id"]},
        }
        item["payload"]["value"] = named["payload_value"]
        if named.get("error_code"):
            item["error_code"] = named["error_code"]
        objects.append(item)
    if fmt is FileFormat.JSON:
        return json.dumps(objects).encode()
    return "".join(json.dumps(item) + "\n" for item in objects).encode()


def run(
    data: bytes, out: Path, fmt: FileFormat, **kwargs: Any
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]], list[Any]]:
    """Remediate, handing the audit records over; (summary, identifiers written to a
    corrected output, quarantined rows as written, audit records handed over)."""
    handed: list[Any] = []

    def on_audit(corrections: pa.RecordBatch, quarantined: list[QuarantinedRow]) -> None:
        handed.extend(corrections_of(corrections))
        handed.extend(quarantined)

    columns = USAGE_HEADER if fmt is FileFormat.CSV else None
    if fmt is FileFormat.CSV and b"error_code" in data.splitlines()[0]:
        columns = HEADER[:6]
    result = remediate(
        read_records(io.BytesIO(data), fmt),
        source=f"usage.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=columns,
        on_audit=on_audit,
        **kwargs,
    )
    written: list[str] = []
    quarantined: list[dict[str, Any]] = []
    for output in result.outputs:
        if output.kind == "corrected":
            with open(output.path, "rb") as handle:
                written += [str(r.identifier) for r in read_records(handle, fmt)]
        else:
            quarantined += rows_of(output.path, fmt)
    return result.summary, written, quarantined, handed


def rows_of(path: Path, fmt: FileFormat) -> list[dict[str, Any]]:
    """A quarantine file's rows, with their `mfx_code` and `mfx_reason`."""
    text = path.read_text()
    if fmt is FileFormat.CSV:
        return list(csv.DictReader(io.StringIO(text)))
    if fmt is FileFormat.JSON:
        loaded: list[dict[str, Any]] = json.loads(text)
        return loaded
    return [json.loads(line) for line in text.splitlines()]


def audit_lines(summary: dict[str, Any]) -> list[dict[str, Any]]:
    text = Path(summary["outputs"]["audit"]).read_text()
    return [json.loads(line) for line in text.splitlines()]


FORMATS = [FileFormat.CSV, FileFormat.JSONL, FileFormat.JSON]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("valid_first", [True, False])
def test_a_row_to_correct_under_a_valid_rows_identifier_is_quarantined(
    tmp_path: Path, fmt: FileFormat, valid_first: bool
) -> None:
    """The reproduction: k1 valid (billed when Stripe imported the file) and k1 in
    milliseconds; corrected, it went out as k1-mfx1 and was billed a second time."""
    rows = [VALID, IN_MS] if valid_first else [IN_MS, VALID]
    summary, written, quarantined, handed = run(as_input([*rows, THOUSANDS], fmt), tmp_path, fmt)
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (1, 1, 1)
    assert written == ["t1-mfx1"]  # the other correction goes out
    valid_row, held_row = (1, 2) if valid_first else (2, 1)
    assert [q["identifier"] for q in quarantined] == ["k1"]
    assert quarantined[0]["mfx_code"] == "identifier_taken"  # never corrected nor re-sent
    which = "an earlier row's" if valid_first else f"row {valid_row}'s"
    assert quarantined[0]["mfx_reason"] == REASON.replace("row {}'s", which)
    assert summary["by_code"]["timestamp_in_future"] == {"corrected": 0, "quarantined": 1}
    assert summary["corrections"] == 1  # t1's only
    lines = audit_lines(summary)
    assert [(x["kind"], x["row"]) for x in lines if x["kind"] != "summary"] == sorted(
        [("quarantine", held_row), ("correction", 3)], key=lambda x: x[1]
    )
    assert [(type(x).__name__, x.row) for x in handed] == [
        ("QuarantinedRow", held_row),
        ("Correction", 3),
    ] or [(type(x).__name__, x.row) for x in handed] == [
        ("Correction", 3),
        ("QuarantinedRow", held_row),
    ]
    held = next(x for x in handed if isinstance(x, QuarantinedRow))
    assert (held.identifier, held.code, held.mfx_code) == (
        "k1",
        "timestamp_in_future",  # the code it arrived with (classified)
        "identifier_taken",
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("valid_first", [True, False])
def test_the_valid_row_in_another_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: FileFormat, valid_first: bool
) -> None:
    """Hundreds of rows apart, in batches of 16 rows (a CSV's of 512 bytes): a valid row
    after the corrected one is known only at the end, and the row is quarantined all the
    same (its audit records, counts and outputs as if known at once)."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 512)
    monkeypatch.setattr(batching, "JSONL_BATCH_ROWS", 16)
    monkeypatch.setattr(batching, "RECORD_BATCH_ROWS", 16)
    first, second = (VALID, IN_MS) if valid_first else (IN_MS, VALID)
    rows = [THOUSANDS, first, *FILLER, second, ["t2", *THOUSANDS[1:]]]
    summary, written, quarantined, handed = run(as_input(rows, fmt), tmp_path, fmt)
    assert summary["input_rows"] == 304
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (301, 2, 1)
    assert written == ["t1-mfx1", "t2-mfx1"]
    valid_row, held_row = (2, 303) if valid_first else (303, 2)
    which = f"row {valid_row}'s" if not valid_first else "an earlier row's"
    assert [(q["identifier"], q["mfx_code"]) for q in quarantined] == [("k1", "identifier_taken")]
    assert quarantined[0]["mfx_reason"] == REASON.replace("row {}'s", which)
    assert summary["by_code"]["timestamp_in_future"] == {"corrected": 0, "quarantined": 1}
    lines = audit_lines(summary)
    kinds = [(x["kind"], x["row"]) for x in lines if x["kind"] != "summary"]
    assert kinds == [("correction", 1), ("quarantine", held_row), ("correction", 304)]
    assert sorted((type(x).__name__, x.row) for x in handed) == sorted(
        [("Correction", 1), ("QuarantinedRow", held_row), ("Correction", 304)]
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_rejected_only_input_sends_every_row(tmp_path: Path, fmt: FileFormat) -> None:
    """A failed-records file: every row was rejected, k1 never billed; both rows go out, the
    corrected one and the valid one each as k1-mfx1 (Stripe keeps one), as before."""
    header = [*USAGE_HEADER, "error_code"]
    rows = [[*VALID, "timestamp_in_future"], [*IN_MS, "timestamp_in_future"]]
    summary, written, quarantined, _ = run(
        as_input(rows, fmt, header), tmp_path, fmt, rejected=True
    )
    assert (summary["corrected"], summary["quarantined"]) == (1, 0)
    assert written == ["k1-mfx1", "k1-mfx1"] and quarantined == []


def test_two_rows_to_correct_under_one_identifier_without_a_valid_one(tmp_path: Path) -> None:
    """No valid row holds k1: nothing of it was billed, and both go out as before."""
    other = ["k1", str(NOW * 1000), "api_requests", "cus_1", "1,234", ""]
    summary, written, quarantined, _ = run(
        as_input([IN_MS, other], FileFormat.CSV), tmp_path, FileFormat.CSV
    )
    assert summary["corrected"] == 2 and quarantined == []
    assert written == ["k1-mfx1", "k1-mfx1"]


def test_a_reported_row_valid_now_under_a_valid_rows_identifier_is_not_sent_again(
    tmp_path: Path,
) -> None:
    """A row Stripe reported that passes now goes out as it came, under k1-mfx1: beside a
    valid k1 (billed), it is held as a corrected one is."""
    header = [*USAGE_HEADER, "error_code"]
    rows = [[*VALID[:4], "7", "", "timestamp_in_future"], [*VALID, ""]]
    summary, written, quarantined, _ = run(
        as_input(rows, FileFormat.CSV, header), tmp_path, FileFormat.CSV
    )
    assert (summary["valid"], summary["quarantined"]) == (1, 1) and written == []
    assert quarantined[0]["mfx_code"] == "identifier_taken"
    assert quarantined[0]["mfx_reason"] == REASON.format(2).replace(
        "not corrected", "not sent again"
    )


same_rows = st.lists(
    st.builds(
        rec,
        st.sampled_from([NOW - 60, (NOW - 60) * 1000, "x"]),  # valid, corrected, quarantined
        st.just("api_requests"),
        st.sampled_from([None, None, "timestamp_in_future"]),
        st.sampled_from(["a", "b", "c", "", None]),
    ),
    max_size=14,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=same_rows, batch=st.sampled_from([2, 3, 4096]), fmt=st.sampled_from(FORMATS))
def test_nothing_goes_out_under_a_valid_rows_identifier(
    rows: list[UsageRecord],
    batch: int,
    fmt: FileFormat,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Any mix of valid, corrected and quarantined rows under a few identifiers, in batches of
    any size: no row goes out under the identifier of a row counted valid (a row with no audit
    line), the counts add up, and a run in one batch writes the same bytes (its valid rows'
    identifiers held in memory, not written to disk as each comes)."""
    for number, row in enumerate(rows, 1):
        row.row_number = number
    seen = []
    for attempt in range(2):
        copies = [replace(r, payload=dict(r.payload)) for r in rows]
        out = tmp_path_factory.mktemp(f"run{attempt}")
        with (
            patch.object(batching, "RECORD_BATCH_ROWS", batch if attempt == 0 else 4096),
            # the valid rows' identifiers on disk from the first (else in memory)
            patch.object(sameids, "SPILL_ROWS", 1 if attempt == 0 else sameids.SPILL_ROWS),
        ):
            result = remediate(
                copies, source=f"in.{fmt.value}", fmt=fmt, meters=ENGINE_METERS,
                rules=ENGINE_RULES, now=NOW, out_dir=out, audit_output=True,
            )  # fmt: skip
        s = result.summary
        assert s["input_rows"] == len(rows) == s["valid"] + s["corrected"] + s["quarantined"]
        audit = [json.loads(x) for x in Path(s["outputs"]["audit"]).read_text().splitlines()]
        told = {x["row"] for x in audit if x["kind"] != "summary"}
        kept = {r.identifier for r in rows if r.row_number not in told}
        written = []
        for output in result.outputs:
            if output.kind == "corrected":
                with open(output.path, "rb") as handle:
                    written += [str(r.identifier) for r in read_records(handle, fmt)]
        assert len(written) == s["corrected"] + sum(x["kind"] == "resend" for x in audit)
        assert not {w.removesuffix("-mfx1") for w in written} & (kept - {None, ""})
        seen.append([o.path.read_bytes() for o in [*result.outputs, result.audit] if o])
        counts = {k: v for k, v in s.items() if k not in ("outputs", "audit")}
    assert seen[0] == seen[1]
    # validation writes nothing and holds nothing back: the same counts
    copies = [replace(r, payload=dict(r.payload)) for r in rows]
    with patch.object(batching, "RECORD_BATCH_ROWS", batch):
        checked = remediate(
            copies, source=f"in.{fmt.value}", fmt=fmt, meters=ENGINE_METERS,
            rules=ENGINE_RULES, now=NOW, out_dir=tmp_path_factory.mktemp("check"), write=False,
        ).summary  # fmt: skip
    assert {k: v for k, v in checked.items() if k not in ("outputs", "audit")} == counts
