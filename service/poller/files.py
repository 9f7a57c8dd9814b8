"""The poller's failed-records file of one object: the rows that failed validation, in the
input's format, with `error_code` and `error_message` columns, handed to remediation, and
beside it the object's row number of each (`store.source_row_numbers`)."""

from __future__ import annotations

import uuid
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from remediation.formats import FileFormat, RecordWriter, read_records
from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from service.poller.store import row_numbers_path


def failed_records_path(work_dir: Path, import_set_id: str, fmt: FileFormat) -> Path:
    """A name of its own for one pass's file, after the import set (`clear_remediated_files`
    reads the id back): a pass whose lock dropped, going on late, started afresh (removed or
    truncated) the file the next pass of the same version had recorded under the one name
    a version had. CSV input keeps CSV; JSON input gives JSON Lines."""
    suffix = "csv" if fmt is FileFormat.CSV else "jsonl"
    return work_dir / f"{import_set_id}.failed.{uuid.uuid4().hex[:16]}.{suffix}"


def discard_failed_records(path: Path) -> None:
    """Remove a pass's file that no import set records (the pass stopped before it recorded
    one), and its rows' numbers: its own name, no other pass's file."""
    path.unlink(missing_ok=True)
    row_numbers_path(path).unlink(missing_ok=True)


class FailedRecords:
    """The failed-records file of one object, in the input's format (CSV keeps its header;
    JSON input gives JSON Lines). Opened lazily: no failed rows, no file."""

    def __init__(self, path: Path, fmt: FileFormat) -> None:
        self.path, self.fmt = path, fmt
        self.columns: list[str] | None = None
        self._writer: RecordWriter | None = None
        self._handle: Any = None
        self._csv: CsvRecords | None = None
        self._numbers: Any = None

    def __enter__(self) -> FailedRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            self._numbers.close()

    def open_records(
        self, stream: Any, limits: FieldLimits = DEFAULT_LIMITS
    ) -> Iterable[UsageRecord]:
        """The object's records, read as the remediation core reads them, under the same
        field limits (a CSV as columns: its header, which the failed rows keep, is known
        once its rows are read). The readers held the default nesting depth whatever the
        rules' `max_json_depth`: rows `meterfix remediate` refuses were sent."""
        records = read_records(stream, self.fmt, limits=limits)
        self._csv = records if isinstance(records, CsvRecords) else None
        return records

    def write(self, groups: Iterable[list[UsageRecord]]) -> int:
        """Write the rows, and their row numbers in the object beside them: remediation
        reads the file, numbered from 1, and would otherwise look the numbers up by
        identifier among the rows the poller recorded, one an identifier (`k1` in
        milliseconds beside a valid `k1` the poller sent was given the sent row's)."""
        numbers = array("q")
        for record in (rec for group in groups for rec in group):
            self._ensure_writer().write(record)
            numbers.append(record.row_number)
        if numbers:
            self._numbers.write(np.asarray(numbers, dtype="<i8").tobytes())
        return len(numbers)

    def _ensure_writer(self) -> RecordWriter:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # created, never truncated: the path is this pass's own (`failed_records_path`)
            self._handle = self.path.open("xb")
            self._numbers = row_numbers_path(self.path).open("xb")
            if self._csv is not None and self.columns is None:
                header = self._csv.columns_header
                self.columns = None if header is None else list(header)
            out_fmt = FileFormat.CSV if self.fmt is FileFormat.CSV else FileFormat.JSONL
            self._writer = RecordWriter(
                self._handle, out_fmt, columns=self.columns, with_errors=True
            )
        return self._writer
