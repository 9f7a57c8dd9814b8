"""Decided batches written record by record: JSON and JSON Lines rows (`writers.RecordWriter`
writes each one as `json.dumps` does), and CSV rows that need another layout. The audit lines,
audit records and counts are the ones built on columns (`audit`), as for a CSV written as bytes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from remediation.core.audit import AuditLines, count
from remediation.core.auditrecords import audit_records
from remediation.core.decided import CORRECTED, QUARANTINED, VALID, Decided
from remediation.identifiers import Identifiers
from remediation.outcomes import Tally
from remediation.records import UsageRecord
from remediation.sinks import NullSet, Sinks


class RecordOut:
    """Writes the decided batches of one input into `sinks`, one record at a time."""

    def __init__(self, sinks: Sinks, ids: Identifiers, source: str) -> None:
        self.sinks, self.ids, self.source = sinks, ids, source
        self.audit = AuditLines(source)

    def write(self, decided: Decided, tally: Tally) -> None:
        if self._counting_only():
            count(decided, tally)  # a validation run: nothing is written, no record is built
            return
        fate = decided.fate
        written = np.flatnonzero((fate == VALID) | (fate == CORRECTED))
        rows = np.flatnonzero((fate == VALID) | (fate == CORRECTED) | (fate == QUARANTINED))
        records = dict(zip(rows.tolist(), decided.batch.take(rows).records(), strict=True))
        fixed = dict(zip(decided.corrected.tolist(), decided.fixed.records(), strict=True))
        new_ids = []
        for i in rows.tolist():
            record = records[i]
            if fate[i] == QUARANTINED:
                notes = {"mfx_code": decided.mfx_code[i], "mfx_reason": decided.reason[i]}
                self.sinks.quarantine.write(record, notes)
                continue
            new_ids.append(self._renamed(fixed.get(i, record), record))
        identifiers = pa.array(new_ids, pa.string())
        if self.sinks.audit_file is not None:
            self.audit.write(decided, written, identifiers, self.sinks.audit_file)
        if self.sinks.on_audit is not None:
            keys = self.sinks.customer_keys
            self.sinks.on_audit(*audit_records(decided, self.source, written, identifiers, keys))
        count(decided, tally)

    def _counting_only(self) -> bool:
        sinks = self.sinks
        outputs = (sinks.corrected, sinks.quarantine)
        idle = all(isinstance(output, NullSet) for output in outputs)
        return idle and sinks.audit_file is None and sinks.on_audit is None

    def _renamed(self, row: UsageRecord, original: UsageRecord) -> str | None:
        """Write a corrected or re-sent row under its new identifier; that identifier."""
        row.identifier = self.ids.new(original.identifier, original.row_number)
        self.sinks.corrected.write(row)
        return row.identifier
