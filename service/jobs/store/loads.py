"""Staging and loading a run's audit and quarantined rows: each staged in a temporary table
as the engine hands it over and loaded sorted by identifier when the run is done
(`AuditStage`, `QuarantineStage`, on their common `SortedStage` of `sorted_stage.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.outcomes import corrections_batch
from service.db.bulk import PG_COPY_HEADER, PG_COPY_TRAILER, pg_copy_data, pg_copy_rows
from service.jobs.store.runs import AUDIT, QUARANTINED
from service.jobs.store.sorted_stage import NUL_HELD_AS, SortedStage

# The columns of a correction as `AuditStage` stages it, in this order: the fields of
# `remediation.outcomes.CORRECTIONS` (its `row` is `row_number`).
AUDIT_COLUMNS = (
    "source",
    "row_number",
    "identifier",
    "new_identifier",
    "code",
    "rule",
    "field",
    "before",
    "after",
)

# A quarantined row as `QuarantineStage.add` takes it: these columns, in this order (`record`
# the row in full as JSON text, stored as it is; `created_at` a timestamp; the rest text or
# numbers).
QUARANTINE_COLUMNS = (
    "source",
    "row_number",
    "identifier",
    "code",
    "reason",
    "meter",
    "customer",
    "record",
    "created_at",
)

# The staged columns' types in PostgreSQL's binary COPY: the record as text (a binary COPY of
# `json` would take a Python object, not its text), made JSON by the load.
_AUDIT_BINARY = {name: "int4" if name == "row_number" else "text" for name in AUDIT_COLUMNS[1:]}
_QUARANTINE_BINARY = {name: "text" for name in QUARANTINE_COLUMNS[1:]} | {
    "row_number": "int4",
    "created_at": "timestamptz",
}


def _without_nul(column: pa.Array) -> pa.Array:
    """A text column with each NUL held as `NUL_HELD_AS` (`SortedStage._without_nul`)."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return column
    if not _holds_nul(column):
        return column
    return pc.replace_substring(column, "\x00", NUL_HELD_AS)


def _holds_nul(column: pa.Array) -> bool:
    """Whether a text column's characters hold a NUL: the smallest byte of its data (2 ms a
    column of 1M identifiers; `match_substring` took 50 ms, 0.35 s for a run's audit)."""
    _, offsets, data = column.buffers()[:3]
    if data is None or offsets is None:
        return False
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    ends = np.frombuffer(offsets, width)[column.offset : column.offset + len(column) + 1]
    held = np.frombuffer(data, np.uint8)[ends[0] : ends[-1]]
    return bool(held.size) and int(held.min()) == 0


class AuditStage(SortedStage):
    """A run's corrections, as the engine hands them over (record batches of
    `remediation.outcomes.CORRECTIONS`, or `Correction` tuples), loaded into
    `correction_audit`.

    On PostgreSQL a batch is staged with its rows encoded for binary COPY by Arrow kernels
    (`db.bulk.pg_copy_rows`): no Python object per correction on either side, so the engine builds
    no tuples (the service's remediation stage 0.5-0.9 s shorter for 900,000 corrections,
    bench/service_path.py); the staging itself takes as long as psycopg's `write_row` of
    tuples did (3.0-3.5 s: PostgreSQL's own time). SQLite takes tuples, made here.

    Tried and dropped: corrections spilled to an Arrow file, sorted by Arrow and sent in one
    binary COPY straight into the table (no stage, no INSERT ... SELECT ... ORDER BY): its
    load took 11.6-15.1 s on PostgreSQL and 11.8-14.6 s on SQLite beside the uploads, no
    better than staged and sorted by the database (12.1-13.0 s, 11.3-11.9 s)."""

    target, columns, what = AUDIT, AUDIT_COLUMNS, "audit"
    stage_name, sorted_name = "mfx_audit_stage", "mfx_audit_sorted"
    binary = _AUDIT_BINARY

    def add(self, rows: pa.RecordBatch | Sequence[tuple[Any, ...]]) -> None:
        """Stage corrections, each of the run's source (a batch holding another source is
        refused, and nothing of it is staged)."""
        batch = rows if isinstance(rows, pa.RecordBatch) else corrections_batch(rows)
        if not len(batch):
            return
        sources = set(pc.unique(batch.column("source")).to_pylist())
        if sources != {self.source}:
            others = sorted(map(str, sources - {self.source}))
            raise ValueError(f"{self.what} of source {self.source!r} only, not of {others!r}")
        fields = [_without_nul(field) for field in batch.columns[1:]]  # the stage's columns
        if not self.too_long:
            self.too_long = any(
                (pc.max(pc.utf8_length(fields[at])).as_py() or 0) > most
                for at, most in self.bounded.items()
            )
        with self.connection.begin():
            if self.postgres:
                self._copy_encoded(pg_copy_rows(fields))
            else:
                values = [field.to_pylist() for field in fields]
                self._stage(list(zip(*values, strict=True)))
        self.staged += len(batch)

    def _copy_encoded(self, rows: pa.Array) -> None:
        """COPY rows `db.bulk.pg_copy_rows` encoded."""
        driver: Any = self.connection.connection.driver_connection
        statement = f"COPY {self.stage_name} ({self.listed}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(PG_COPY_HEADER)
            copy.write(pg_copy_data(rows))
            copy.write(PG_COPY_TRAILER)


class QuarantineStage(SortedStage):
    """A run's quarantined rows (tuples of `QUARANTINE_COLUMNS`), loaded into
    `quarantined_rows`, the record as JSON text stored as it is (PostgreSQL: staged as text,
    made JSON by the load; 233,000 rows staged with text COPY took 3.0 s in a run, with
    binary COPY 1.5 s). 233,000 of them inserted 20,000 a transaction as they came took
    SQLite 5.9 s alone, staged and loaded sorted 3.3 s (the identifier index written in
    order; the customer index stays random); PostgreSQL 7.3 s against 5.1 s. The rows of a
    run are listed by id, so in identifier order, not the file's (`row_number` keeps it)."""

    target, columns, what = QUARANTINED, QUARANTINE_COLUMNS, "quarantined rows"
    stage_name, sorted_name = "mfx_quarantine_stage", "mfx_quarantine_sorted"
    binary = _QUARANTINE_BINARY
    as_text = ("record",)
