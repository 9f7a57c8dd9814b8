"""Decided CSV batches written as bytes: corrected and quarantine rows (and `audit` lines).

The bytes are what the record writers write for the same rows (`csv.writer` cells), built on
whole columns (`text`). A batch whose corrected rows need another
layout (a key the header has no column for) is left to the record path (`write` says False),
as is every batch once an output was opened with other columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from remediation.codes import ErrorCode
from remediation.core.audit import AuditLines, account
from remediation.core.batchjoin import Interleave
from remediation.core.columns import Batch, Column, Indexes
from remediation.core.csvtext import CellSource, csv_lines
from remediation.core.decided import QUARANTINED, VALID, Decided
from remediation.core.newids import new_identifiers
from remediation.identifiers import Identifiers
from remediation.outcomes import Tally
from remediation.outputs import OutputSet
from remediation.records import PAYLOAD_PREFIX
from remediation.sinks import Sinks
from remediation.writers import output_columns, payload_column


class CsvOut:
    """Writes the decided batches of one CSV input into `sinks`."""

    def __init__(self, sinks: Sinks, columns: Sequence[str], ids: Identifiers, source: str):
        self.sinks, self.ids, self.source = sinks, ids, source
        self.columns = output_columns(columns)
        self.payload_keys = {c[len(PAYLOAD_PREFIX) :] for c in self.columns if payload_column(c)}
        self.audit = AuditLines(source)

    def usable(self) -> bool:
        corrected, quarantine = self.sinks.corrected, self.sinks.quarantine
        if not isinstance(corrected, OutputSet) or not isinstance(quarantine, OutputSet):
            return False
        ready = _takes_bytes(corrected) and _takes_bytes(quarantine)
        return ready and self.sinks.audit_file is not None

    def write(self, decided: Decided, tally: Tally) -> bool:
        """Write one decided batch; False (nothing written) when it needs the record path."""
        if not self.usable():
            return False
        batch, fixed = decided.batch, decided.fixed
        if batch.order is not None or fixed.order is not None:
            return self._write_ordered(decided, tally)
        valid = np.flatnonzero(decided.fate == VALID)
        if not self._fits([(batch, valid), (fixed, None)]):
            return False
        weave = Interleave(len(batch), valid, decided.corrected)
        identifiers = weave.column(batch.identifier, fixed.identifier)
        new_ids = new_identifiers(self.ids, identifiers, batch.rows[weave.rows])
        if len(weave.rows):
            cells = self._sources(batch, fixed, weave, new_ids)
            self._block(self.sinks.corrected, cells, len(weave.rows))
        self._finish(decided, weave.rows, new_ids, tally)
        return True

    def _write_ordered(self, decided: Decided, tally: Tally) -> bool:
        """`write` for rows with key orders of their own (a rule renamed a key): the written
        rows made one batch first (`Decided.written`)."""
        written, out = decided.written()
        if not self._fits([(out, None)]):
            return False
        new_ids = new_identifiers(self.ids, out.identifier, out.rows)
        if len(out):
            everyone = np.arange(len(out), dtype=np.int64)
            cells = self._taken(out, everyone, new_ids)
            self._block(self.sinks.corrected, cells, len(out))
        self._finish(decided, written, new_ids, tally)
        return True

    def _finish(self, decided: Decided, written: Indexes, new_ids: pa.Array, tally: Tally) -> None:
        """The batch's quarantined rows, its audit and its counts."""
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            batch = decided.batch
            cells = self._taken(batch, quarantined)
            for notes in (decided.mfx_code, decided.reason):
                lines = np.arange(len(quarantined), dtype=np.int64)
                cells.append([(pa.array(notes[quarantined], pa.string()), lines, lines)])
            self._block(self.sinks.quarantine, cells, len(quarantined))
        account(self.audit, decided, written, new_ids, self.sinks, tally)

    def _fits(self, parts: Sequence[tuple[Batch, Indexes | None]]) -> bool:
        """The written rows (of each batch, those given, or all) hold no key the output has
        no column for."""
        for batch, rows in parts:
            for key, column in batch.payload.items():
                if key in self.payload_keys:
                    continue
                present = column.present()
                if (present if rows is None else present[rows]).any():
                    return False
            if any(name not in self.columns for name in batch.extra):
                return False
        return True

    def _sources(
        self, batch: Batch, fixed: Batch, weave: Interleave, new_ids: pa.Array
    ) -> list[list[CellSource]]:
        """Where each output column's cells are read for the written rows (`weave`): the
        valid rows' from the batch's columns, the corrected rows' from the corrected ones
        (from the batch's when no rule changed the column), nothing gathered."""
        n, placed = len(batch), len(fixed)
        lines = np.arange(len(weave.rows), dtype=np.int64)
        cells: list[list[CellSource]] = []
        for name in self.columns:
            if name == "identifier":
                cells.append([(new_ids, lines, lines)])
            elif name in ("timestamp", "event_name"):
                cells.append(weave.sources(getattr(batch, name), getattr(fixed, name)))
            elif payload_column(name):
                key = name[len(PAYLOAD_PREFIX) :]
                mine, theirs = _key(batch.payload, key, n), _key(fixed.payload, key, placed)
                cells.append(weave.sources(mine, theirs))
            else:
                mine, theirs = _key(batch.extra, name, n), _key(fixed.extra, name, placed)
                cells.append(weave.sources(mine, theirs))
        return cells

    def _block(self, output: object, cells: Sequence[Sequence[CellSource]], rows: int) -> None:
        assert isinstance(output, OutputSet)
        data, ends = csv_lines(cells, rows)
        output.write_block(memoryview(data), ends.tolist())

    def _taken(
        self, batch: Batch, rows: Indexes, new_ids: pa.Array | None = None
    ) -> list[list[CellSource]]:
        """Where each output column's cells are read for rows `rows` of `batch` (under
        `new_ids`, one a row, when given), nothing gathered."""
        lines = np.arange(len(rows), dtype=np.int64)
        cells: list[list[CellSource]] = []
        for name in self.columns:
            if name == "identifier" and new_ids is not None:
                cells.append([(new_ids, lines, lines)])
                continue
            if name in ("identifier", "timestamp", "event_name"):
                column: Column | None = getattr(batch, name)
            elif payload_column(name):
                column = batch.payload.get(name[len(PAYLOAD_PREFIX) :])
            else:
                column = batch.extra.get(name)
            if column is None:
                cells.append([(_empty(len(rows)), lines, lines)])
            else:
                array, places = column.cell_rows()
                cells.append([(array, lines, places[rows])])
        return cells


def _key(columns: Mapping[str, Column], key: str, length: int) -> Column:
    return columns.get(key) or Column.absent(length)


def _takes_bytes(output: OutputSet) -> bool:
    """The first layout has (or will have) the set's columns: rows can go in as bytes."""
    if not output.layouts:
        return output.columns is not None
    return output.layouts[0][0].writer.columns == list(output.columns or ())


def _empty(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())


__all__ = ["CsvOut", "ErrorCode"]
