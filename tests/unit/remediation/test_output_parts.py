"""Output parts stay under their byte limit whatever the rows' sizes ("Bucket output: at most
1,000,000 records and 1 GB per file"): a part's size was looked at every 1,024 rows and the
next ones assumed as long as the average so far, so rows growing from 100 bytes to 1 MB
made a part of 1.07 GB (Stripe fails a file over 1 GB whole). Here the limit is 3,000 bytes
and 50 rows grow from 4 to about 500 bytes: the parts were one file of about 10 KB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediation.filetypes import FileFormat
from remediation.outputs import OutputSet
from remediation.records import UsageRecord

LIMIT = 3000
SIZES = [4] * 30 + [500] * 20


def _check(outputs: list[Path], rows: list[bytes], head: bytes = b"") -> None:
    """Every part within the limit, and the rows, in order, across them (headers aside)."""
    assert len(outputs) > 1
    found = b""
    for path in outputs:
        data = path.read_bytes()
        assert len(data) <= LIMIT, (path.name, len(data))
        assert data.startswith(head)
        found += data[len(head) :]
    assert found == b"".join(rows)


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSONL])
def test_parts_written_from_encoded_rows_stay_under_the_limit(
    tmp_path: Path, fmt: FileFormat
) -> None:
    columns = ["identifier", "note"]
    if fmt is FileFormat.CSV:
        rows = [f"r{i},{'x' * size}\n".encode() for i, size in enumerate(SIZES)]
    else:
        rows = [
            (json.dumps({"identifier": f"r{i}", "note": "x" * n}) + "\n").encode()
            for i, n in enumerate(SIZES)
        ]
    ends = [0]
    for row in rows:
        ends.append(ends[-1] + len(row))
    parts = OutputSet(tmp_path, "u.csv", "corrected", fmt, 1, columns=columns, max_bytes=LIMIT)
    parts.write_block(b"".join(rows), ends)
    outputs = [output.path for output in parts.finish()]
    _check(outputs, rows, b"identifier,note\r\n" if fmt is FileFormat.CSV else b"")


def test_parts_written_record_by_record_stay_under_the_limit(tmp_path: Path) -> None:
    parts = OutputSet(tmp_path, "u.jsonl", "quarantine", FileFormat.JSONL, 1, max_bytes=LIMIT)
    rows = []
    for i, size in enumerate(SIZES):
        record = UsageRecord(i + 1, f"r{i}", 1, "api", {}, extra={"note": "x" * size})
        parts.write(record, {"mfx_code": "malformed_row"})
    outputs = [output.path for output in parts.finish()]
    for path in outputs:
        rows += [line + b"\n" for line in path.read_bytes().splitlines()]
    assert [json.loads(row)["identifier"] for row in rows] == [f"r{i}" for i in range(50)]
    _check(outputs, rows)
