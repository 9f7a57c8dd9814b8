"""Rows a caller leaves out of a run by identifier (`ports.LeavesOut`, `core.leftout`): the
service's import-set runs leave out rows billed from another version or handled by another
run. Left out on the run's columns, they give what leaving them out of the records gave, in
every format, and the filters are asked in their order. (Leaving them out of a stream of
records made the run read every row as a record: the service's import-set remediation stage
took 17 s for 1M rows instead of 2.1 s.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.records import UsageRecord
from remediation.rules import Rules

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]


class Leave:
    """Leaves out the identifiers it names; records what it was asked."""

    def __init__(self, names: set[str]) -> None:
        self.names, self.left, self.asked = names, 0, set[str]()

    def excluded(self, identifiers: set[str]) -> set[str]:
        self.asked |= identifiers
        return identifiers & self.names

    def count_left(self, rows: int) -> None:
        self.left += rows


def _rows(count: int) -> list[tuple[str, int, str]]:
    """(identifier, timestamp, value): ms timestamps (corrected), an `abc` value
    (quarantined), a repeated identifier, an empty one, one holding a NUL."""
    rows = [(f"id-{n}", (NOW - 60) * 1000, str(n)) for n in range(count)]
    rows += [("id-3", NOW - 60, "abc"), ("", NOW - 60, "7"), ("nul\x00x", NOW - 60, "8")]
    return rows


def _file(rows: list[tuple[str, int, str]], fmt: FileFormat) -> bytes:
    if fmt is FileFormat.CSV:
        head = (
            "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
        )
        lines = [f"{i},{t},api_requests,cus_1,{v},timestamp_in_future" for i, t, v in rows]
        return (head + "\n".join(lines) + "\n").encode()
    import json

    items = [
        json.dumps(
            {
                "identifier": i,
                "timestamp": t,
                "event_name": "api_requests",
                "payload": {"stripe_customer_id": "cus_1", "value": v},
                "error": {"code": "timestamp_in_future"},
            }
        )
        for i, t, v in rows
    ]
    if fmt is FileFormat.JSON:
        return ("[\n" + ",\n".join(items) + "\n]\n").encode()
    return ("\n".join(items) + "\n").encode()


def _outputs(
    tmp_path: Path, name: str, fmt: FileFormat, records: object, **more: object
) -> dict[str, bytes]:
    out = tmp_path / name
    result = remediate(
        records,  # type: ignore[arg-type]
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=out,
        rejected=True,
        **more,  # type: ignore[arg-type]
    )
    found = {p.name: p.read_bytes() for p in out.iterdir()}
    found["summary"] = repr({k: v for k, v in result.summary.items() if k != "outputs"}).encode()
    return found


def _dropped(records: Iterator[UsageRecord], names: set[str]) -> Iterator[UsageRecord]:
    return (r for r in records if r.identifier not in names)


@pytest.mark.parametrize("fmt", [FileFormat.CSV, FileFormat.JSONL, FileFormat.JSON])
def test_rows_left_out_on_columns_are_the_rows_left_out_of_the_records(
    tmp_path: Path, fmt: FileFormat
) -> None:
    rows = _rows(40_000)  # more than one batch
    data = _file(rows, fmt)
    names = {f"id-{n}" for n in range(0, 40_000, 7)} | {"id-3", "nul\x00x", ""}
    first, second = Leave({n for n in names if n.endswith("1")}), Leave(names)
    on_columns = _outputs(
        tmp_path, "columns", fmt, read_records(io.BytesIO(data), fmt), leave_out=(first, second)
    )
    records = _dropped(read_records(io.BytesIO(data), fmt), names - {"nul\x00x", ""})
    as_records = _outputs(tmp_path, "records", fmt, records)
    assert on_columns == as_records
    # the first filter's rows are not shown to the second; empty and NUL identifiers to none
    expected_first = sum(1 for i, _, _ in rows if i in first.names)
    expected_second = sum(
        1 for i, _, _ in rows if i in names and i not in first.names and i and "\x00" not in i
    )
    assert (first.left, second.left) == (expected_first, expected_second)
    assert "" not in first.asked | second.asked and "nul\x00x" not in first.asked | second.asked
    assert not (second.asked & first.names)
