"""The poller's failed-records file of one object: the rows that failed validation, in the
input's format, with `error_code` and `error_message` columns, handed to remediation, and
beside it the object's row number of each (`store.source_row_numbers`); and the clearing of
the files no import set records."""

from __future__ import annotations

import logging
import os
import time
import uuid
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from remediation.formats import FileFormat, RecordWriter, read_records
from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from service.jobs.store.reports import import_sets
from service.logs import log_event
from service.models import ImportSet
from service.poller.store import row_numbers_path

# How long a file no import set records is kept after its pass last wrote it: a pass whose
# lock dropped right after its last check records its file still (`clear_unrecorded_files`)
UNRECORDED_KEPT_SECONDS = 3600.0


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


def failed_records_files(work_dir: Path) -> dict[str, list[Path]]:
    """Import set id -> its failed-records files in `work_dir`: each pass's file, and its
    rows' numbers beside it."""
    found: dict[str, list[Path]] = {}
    for path in work_dir.glob("*.failed.*"):
        found.setdefault(path.name.split(".failed.")[0], []).append(path)
    return found


def recorded_import_sets(engine: Engine, ids: Sequence[str], size: int = 500) -> list[ImportSet]:
    """The recorded import sets of these ids, `size` a query."""
    ids = sorted(ids)
    return [s for at in range(0, len(ids), size) for s in import_sets(engine, ids[at : at + size])]


def clear_unrecorded_files(engine: Engine, work_dir: Path) -> int:
    """Delete the failed-records files in `work_dir` that their import set does not record
    (or no import set: none recorded), last written over UNRECORDED_KEPT_SECONDS ago; how
    many. A pass killed before it recorded its file (SIGKILL, out of memory) ran no cleanup,
    and every later pass writes under a name of its own: when the version's import set
    came to record none (no row failed again, the version given up) or another, nothing
    ever deleted it. Run by a pass holding the poller lock, before it imports: no other
    pass can record a file (one whose lock dropped finds the import set's save fenced, and
    removes its own), and one a pass still writes is recent (`FailedRecords` touches it on
    closing), so an old one is no live pass's. A file an import set records stays until
    its remediation is done (`jobs.remediation`, `job.clear_remediated_files`). A failure is
    logged: the next pass tries again."""
    found = failed_records_files(work_dir)
    try:
        recorded = _recorded_names(engine, list(found))
        old = time.time() - UNRECORDED_KEPT_SECONDS
        left = [
            path
            for paths in found.values()
            for path in paths
            if path.name.removesuffix(".rows") not in recorded and _written_before(path, old)
        ]
        for path in left:
            path.unlink(missing_ok=True)
    except Exception as exc:  # loop edge: the pass goes on, the next one tries again
        log_event(
            "poller.clear_unrecorded_failed",
            level=logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}"[:500],
        )
        return 0
    if left:
        log_event("poller.unrecorded_files_cleared", files=len(left))
    return len(left)


def _recorded_names(engine: Engine, ids: Sequence[str]) -> set[str]:
    """The names of the failed-records files the import sets of these ids record."""
    paths = (s.detail.get("failed_records_path") for s in recorded_import_sets(engine, ids))
    return {Path(str(path)).name for path in paths if path}


def _written_before(path: Path, when: float) -> bool:
    try:
        return path.stat().st_mtime < when
    except FileNotFoundError:  # deleted meanwhile (its remediation done)
        return False


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
            # written now, whenever the last buffer went out: the age by which a file no
            # import set records is cleared counts from here (`clear_unrecorded_files`)
            os.utime(self.path)
            os.utime(row_numbers_path(self.path))

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
