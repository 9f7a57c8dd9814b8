"""Which rows are re-sent: only rejected rows (failed-records inputs, rows carrying an error) and
rows our validation proves Stripe rejects; every other row is `valid` and goes to no output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.identifiers import Ancestor, Lineage
from tests.unit.remediation.test_batches import compare, write_csv
from tests.unit.remediation.test_csv_columns import HEADER, METERS, NOW, RULES

USAGE_HEADER = HEADER[:6]  # no error columns: a usage file Stripe or the poller imported
BILLED = [
    [f"ok{n}", str(NOW - n), "api_requests", "cus_1", str(n + 1), ""] for n in range(40)
]  # accepted by Stripe already
BROKEN = [
    ["ms", str(NOW * 1000), "api_requests", "cus_1", "5", ""],  # milliseconds: corrected
    ["thou", str(NOW), "api_requests", "cus_1", "1,234", ""],  # thousands: corrected
    ["text", str(NOW), "api_requests", "cus_1", "abc", ""],  # quarantined
]


def usage_csv(rows: list[list[str]], header: list[str] = USAGE_HEADER) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def run(
    data: bytes, out: Path, fmt: FileFormat = FileFormat.CSV, fast: bool = True, **kwargs: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Remediate; (summary, every row written to a corrected output)."""
    records = read_records(io.BytesIO(data), fmt)
    columns = None
    if fmt is FileFormat.CSV:
        header = next(csv.reader([data.decode().splitlines()[0]]))
        columns = [c for c in header if not c.startswith("error")]
    result = remediate(
        records if fast else list(records),
        source=f"usage.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=columns,
        **kwargs,
    )
    written: list[dict[str, Any]] = []
    for output in result.outputs:
        if output.kind == "corrected":
            with open(output.path, "rb") as handle:
                written += [
                    {"identifier": r.identifier, **r.payload} for r in read_records(handle, fmt)
                ]
    return result.summary, written


@pytest.mark.parametrize("fast", [True, False])
def test_rows_of_a_usage_file_that_were_billed_are_never_resent(tmp_path: Path, fast: bool) -> None:
    rows = BILLED[:20] + BROKEN + BILLED[20:]
    summary, written = run(usage_csv(rows), tmp_path, fast=fast)
    assert (summary["input_rows"], summary["valid"]) == (43, 40)
    assert (summary["corrected"], summary["quarantined"]) == (2, 1)
    assert sorted(r["identifier"] for r in written) == ["ms-mfx1", "thou-mfx1"]
    audit = Path(summary["outputs"]["audit"]).read_text().splitlines()
    assert not any('"ok' in line for line in audit)  # nothing recorded for billed rows


def test_json_lines_usage_file(tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "identifier": r[0],
                "timestamp": r[1],
                "event_name": r[2],
                "payload": {"stripe_customer_id": r[3], "value": r[4]},
            }
        )
        for r in BILLED[:5] + BROKEN
    ]
    summary, written = run("\n".join(lines).encode() + b"\n", tmp_path, FileFormat.JSONL)
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (5, 2, 1)
    assert sorted(r["identifier"] for r in written) == ["ms-mfx1", "thou-mfx1"]


def test_a_row_carrying_an_error_was_rejected(tmp_path: Path) -> None:
    """In any input, a row with an error code or message was rejected: never counted valid.
    Valid now, with a code or a message no code stands for, it is unclassified: it was
    re-sent blind (`said-mfx1`), and refused as a duplicate it would have been billed twice."""
    rows = [[*r, "", ""] for r in BILLED[:3]]
    rows.append(["late", str(NOW), "api_requests", "cus_1", "5", "", "odd_code_we_lack", ""])
    rows.append(["said", str(NOW), "api_requests", "cus_1", "5", "", "", "Something failed"])
    summary, written = run(usage_csv(rows, HEADER), tmp_path)
    assert summary["valid"] == 3 and summary["quarantined"] == 2  # both unclassified
    assert written == []


@pytest.mark.parametrize("fast", [True, False])
def test_every_row_of_a_failed_records_file_goes_to_an_output(tmp_path: Path, fast: bool) -> None:
    rows = [[*r, "", ""] for r in BILLED[:5] + BROKEN]
    summary, written = run(usage_csv(rows, HEADER), tmp_path, fast=fast, rejected=True)
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (5, 2, 1)
    assert len(written) == 7  # valid and corrected rows; the quarantined one is in quarantine


def test_a_corrected_row_failing_again_with_the_same_code_stays_out(tmp_path: Path) -> None:
    rows = [
        ["ms-mfx1", str(NOW * 1000), "api_requests", "cus_1", "5", "", "timestamp_in_future", ""],
        ["inv-r7", str(NOW * 1000), "api_requests", "cus_1", "5", "", "timestamp_in_future", ""],
    ]
    lineage = Lineage({"ms-mfx1": Ancestor("ms", "timestamp_in_future", 1)})
    summary, written = run(
        usage_csv(rows, HEADER), tmp_path, rejected=True, lineage=lineage, generation=2
    )
    assert (summary["corrected"], summary["quarantined"]) == (1, 1)
    assert [r["identifier"] for r in written] == ["inv-r7-mfx2"]  # a customer's own id


@pytest.mark.parametrize("rejected", [False, True])
def test_batches_keep_billed_rows_out_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rejected: bool
) -> None:
    rows = [[*r, "", ""] for r in BILLED * 5 + BROKEN * 10]
    rows = [[f"{n}-{r[0]}", *r[1:]] for n, r in enumerate(rows)]
    path = write_csv(tmp_path / "usage.csv", [r[:6] for r in rows], USAGE_HEADER)
    compare(path, tmp_path, monkeypatch, rejected=rejected)
    summary_files = list((tmp_path / "split").glob("*.corrected.*"))
    written = sum(len(p.read_text().splitlines()) - 1 for p in summary_files)
    assert written == (200 + 20 if rejected else 20)


def test_a_rejected_input_keeping_a_row_out_is_a_conservation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediation.core import decide
    from remediation.core import decided as fates
    from remediation.errors import ConservationError

    original = decide.BatchDecider.decide

    def keeping_out(self: decide.BatchDecider, batch: Any) -> Any:
        decided = original(self, batch)
        decided.fate[decided.fate == fates.VALID] = fates.VALID_KEPT
        return decided

    monkeypatch.setattr(decide.BatchDecider, "decide", keeping_out)
    rows = [[*r, "", ""] for r in BILLED[:2]]
    with pytest.raises(ConservationError, match="kept out"):
        run(usage_csv(rows, HEADER), tmp_path, fast=False, rejected=True)
