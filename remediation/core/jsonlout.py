"""Decided JSON Lines and JSON array batches written as bytes: the corrected rows built on
columns (a JSON array's writer puts its separators between the lines, `writers.write_bytes`).

A corrected row's line is what `writers.RecordWriter` writes for its record (`json.dumps` of
`writers.record_object`, compact, `ensure_ascii=False`), built by `jsonrows.row_texts`. A
batch holding a value whose JSON text is not its column text (an object or array, a float
that is not finite) is left to the record path (`write` says False). Quarantined rows are
written the same way, as they came, their code and reason closing the line (`mfx_code`,
`mfx_reason`, as the record writer adds them). The audit is the one built on columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.audit import AuditLines, account
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.decided import QUARANTINED, Decided
from remediation.core.jsonrows import plain, quarantine_notes, row_texts
from remediation.core.jsontext import json_lines_safe
from remediation.core.newids import new_identifiers
from remediation.core.text import line_bytes
from remediation.filetypes import FileFormat
from remediation.identifiers import Identifiers
from remediation.outcomes import Tally
from remediation.outputs import OutputSet
from remediation.sinks import Sinks
from remediation.writers import WHOLE_SECONDS


class JsonlOut:
    """Writes the decided batches of one JSON Lines input into `sinks`."""

    def __init__(self, sinks: Sinks, ids: Identifiers, source: str) -> None:
        self.sinks, self.ids, self.source = sinks, ids, source
        self.audit = AuditLines(source)

    def usable(self) -> bool:
        corrected = self.sinks.corrected
        return (
            isinstance(corrected, OutputSet)
            and corrected.fmt in (FileFormat.JSONL, FileFormat.JSON)
            and isinstance(self.sinks.quarantine, OutputSet)
            and self.sinks.audit_file is not None
        )

    def write(self, decided: Decided, tally: Tally) -> bool:
        """Write one decided batch; False (nothing written) when it needs the record path."""
        if not self.usable():
            return False
        written, out = decided.written()
        if not plain(out):
            return False
        original = decided.batch.identifier.take(written)  # derived from the row as it came
        new_ids = new_identifiers(self.ids, original, decided.batch.rows[written])
        if len(out):
            data, ends = self.lines(out.with_fields(timestamp=sent_seconds(out.timestamp)), new_ids)
            corrected = self.sinks.corrected
            assert isinstance(corrected, OutputSet)
            corrected.write_block(memoryview(data), ends.tolist())
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            self._quarantine(decided, quarantined)
        account(self.audit, decided, written, new_ids, self.sinks, tally)
        return True

    def lines(
        self, batch: Batch, identifiers: pa.Array, notes: Sequence[tuple[str, pa.Array]] = ()
    ) -> tuple[pa.Buffer | bytes, Indexes]:
        """The JSON Lines bytes of `batch`'s rows written under `identifiers`, and where each
        line ends (as `csvtext.csv_rows` gives them). `notes`: keys to close each line with, and
        their values as JSON texts (a quarantined row's code and reason)."""
        return line_bytes(json_lines_safe(row_texts(batch, identifiers, notes, end="\n")))

    def _quarantine(self, decided: Decided, rows: Indexes) -> None:
        """Quarantined rows as they came, closed by their code and reason: on columns, as
        the corrected rows are, or record by record when a value is written its own way
        (`jsonrows.plain`)."""
        batch = decided.batch.take(rows)
        quarantine = self.sinks.quarantine
        if batch.order is not None and plain(batch):
            closing = quarantine_notes(decided.mfx_code[rows], decided.reason[rows])
            data, ends = self.lines(batch, batch.identifier.text, closing)
            assert isinstance(quarantine, OutputSet)
            quarantine.write_block(memoryview(data), ends.tolist())
            return
        for i, record in zip(rows.tolist(), batch.records(), strict=True):
            notes = {"mfx_code": decided.mfx_code[i], "mfx_reason": decided.reason[i]}
            quarantine.write(record, notes)


def sent_seconds(column: Column) -> Column:
    """A corrected row's timestamp column, its text values of whole seconds written as JSON
    numbers (`writers.WHOLE_SECONDS`, as `writers.record_object` writes a row to Stripe)."""
    if column.kinds is not None and not (column.kinds == Kind.TEXT).any():
        return column  # JSON numbers all (or null): as they are
    whole = pc.match_substring_regex(column.text, f"^{WHOLE_SECONDS.pattern}$")
    at = np.asarray(pc.fill_null(whole, False).to_numpy(zero_copy_only=False), bool)
    if not at.any():
        return column
    kinds = np.zeros(len(column), np.uint8) if column.kinds is None else column.kinds.copy()
    kinds[at] = Kind.INT
    return Column(column.text, kinds)
