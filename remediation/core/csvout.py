"""Decided CSV batches written as bytes: corrected and quarantine rows (and `audit` lines).

The bytes are what the record writers write for the same rows (`csv.writer` cells), built on
whole columns (`text`). A batch whose corrected rows need another
layout (a key the header has no column for) is left to the record path (`write` says False),
as is every batch once an output was opened with other columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from remediation.codes import ErrorCode
from remediation.core.audit import AuditLines, account, new_identifiers
from remediation.core.columns import Batch, Indexes
from remediation.core.decide import QUARANTINED, Decided
from remediation.core.text import csv_rows
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
        written, out = decided.written()
        if not self._fits(out):
            return False
        new_ids = new_identifiers(self.ids, out.identifier, out.rows)
        if len(out):
            self._block(self.sinks.corrected, self._cells(out, new_ids))
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            self._quarantine(decided, quarantined)
        account(self.audit, decided, written, new_ids, self.sinks, tally)
        return True

    def _fits(self, out: Batch) -> bool:
        for key, column in out.payload.items():
            if key not in self.payload_keys and column.present().any():
                return False
        return all(name in self.columns for name in out.extra)

    def _cells(self, batch: Batch, identifiers: pa.Array) -> list[pa.Array]:
        cells = []
        for name in self.columns:
            if name == "identifier":
                cells.append(identifiers)
            elif name in ("timestamp", "event_name"):
                cells.append(getattr(batch, name).cells())
            elif payload_column(name):
                column = batch.payload.get(name[len(PAYLOAD_PREFIX) :])
                cells.append(column.cells() if column is not None else _empty(len(batch)))
            else:
                column = batch.extra.get(name)
                cells.append(column.cells() if column is not None else _empty(len(batch)))
        return cells

    def _block(self, output: object, cells: list[pa.Array]) -> None:
        assert isinstance(output, OutputSet)
        data, ends = csv_rows(cells)
        output.write_block(memoryview(data), ends.tolist())

    def _quarantine(self, decided: Decided, rows: Indexes) -> None:
        batch = decided.batch.take(rows)
        cells = self._cells(batch, batch.identifier.text)
        cells.append(pa.array(decided.mfx_code[rows], pa.string()))
        cells.append(pa.array(decided.reason[rows], pa.string()))
        self._block(self.sinks.quarantine, cells)


def _takes_bytes(output: OutputSet) -> bool:
    """The first layout has (or will have) the set's columns: rows can go in as bytes."""
    if not output.layouts:
        return output.columns is not None
    return output.layouts[0][0].writer.columns == list(output.columns or ())


def _empty(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())


__all__ = ["CsvOut", "ErrorCode"]
