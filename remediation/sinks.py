"""Where a remediation run puts rows: corrected and quarantine output sets, and the audit trail.

The audit file is written under a temporary name and renamed by `finish`, like the outputs.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

from remediation.filetypes import FileFormat
from remediation.outcomes import AuditSink
from remediation.outputs import MAX_BYTES as MAX_OUTPUT_BYTES
from remediation.outputs import MAX_ROWS as MAX_OUTPUT_ROWS
from remediation.outputs import OutputSet, PlannedOutput, audit_name, lineage
from remediation.records import QUARANTINE_FIELDS, UsageRecord
from remediation.spool import SpooledFile, open_spooled


class NullSet:
    """An output set that only counts (validation runs write nothing)."""

    rows = 0

    def write(self, record: UsageRecord, notes: Mapping[str, object] | None = None) -> None:
        self.rows += 1

    def close(self) -> None:
        return None

    def finish(self) -> list[PlannedOutput]:
        return []

    def abort(self) -> None:
        return None


class Sinks:
    """The corrected and quarantine output sets and the audit trail of one run."""

    def __init__(
        self,
        out_dir: Path,
        source: str,
        fmt: FileFormat,
        generation: int,
        columns: Sequence[str] | None,
        write: bool,
        max_rows: int | None,
        on_audit: AuditSink | None,
        max_bytes: int = MAX_OUTPUT_BYTES,
        audit_output: bool = False,
        customer_keys: Mapping[str, str] | None = None,
        kept: bool = False,
    ) -> None:
        limit = max_rows or MAX_OUTPUT_ROWS
        self.kept = kept  # identifiers kept as they came (`--identifiers keep`)
        self.corrected: OutputSet | NullSet = NullSet()
        self.quarantine: OutputSet | NullSet = NullSet()
        self.audit_path: Path | None = None
        self.audit_file: TextIO | None = None
        self._audit_digest: SpooledFile | None = None
        # The audit file as an output (its lines, its SHA-256, its lineage), once finished,
        # when asked for (`audit_output`: hashed and counted as it is written).
        self.audit_output: PlannedOutput | None = None
        self.on_audit = on_audit
        # Each event name's customer key: a quarantined row's customer, for `on_audit`.
        self.customer_keys: Mapping[str, str] = customer_keys or {}
        self.out_dir = out_dir
        self.source, self.generation = source, generation
        if write:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._open_outputs(fmt, columns, limit, max_bytes, audit_output)

    def _open_outputs(
        self,
        fmt: FileFormat,
        columns: Sequence[str] | None,
        limit: int,
        max_bytes: int,
        audit_output: bool,
    ) -> None:
        """The corrected and quarantine output sets and the audit file, opened in `out_dir`."""
        out_dir, source, generation = self.out_dir, self.source, self.generation
        self.corrected = OutputSet(
            out_dir,
            source,
            "corrected",
            fmt,
            generation,
            columns=columns,
            max_rows=limit,
            max_bytes=max_bytes,
            kept=self.kept,
        )
        self.quarantine = OutputSet(
            out_dir,
            source,
            "quarantine",
            fmt,
            generation,
            columns=columns,
            annotations=QUARANTINE_FIELDS,
            max_rows=limit,
            max_bytes=max_bytes,
        )
        name = audit_name(source, generation)
        self.audit_path = (out_dir / name).resolve()
        self.audit_tmp = out_dir / f".{name}.tmp"
        # hashed and its lines counted only when it is an output
        binary, spooled = open_spooled(self.audit_tmp, audit_output, hashed=audit_output)
        self._audit_digest = spooled if audit_output else None
        self.audit_file = io.TextIOWrapper(binary, encoding="utf-8")  # as open(.., "w")

    def audit(self, entry: dict[str, Any]) -> None:
        """One line of the audit file (one short line per decision)."""
        if self.audit_file is not None:
            self.audit_file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def finish(self, summary_entry: dict[str, Any]) -> list[PlannedOutput]:
        """Close every output, then rename them all; the audit trail ends with
        `summary_entry`. Every file is written out before any is renamed: a disk filling up
        on the audit's last lines left the corrected and quarantine files under their final
        names beside no audit, and the run failed."""
        self.corrected.close()
        self.quarantine.close()
        self.audit(summary_entry)
        if self.audit_file is not None:
            self.audit_file.close()
        outputs = self.corrected.finish() + self.quarantine.finish()
        if self.audit_file is not None and self.audit_path is not None:
            self.audit_tmp.replace(self.audit_path)
            if self._audit_digest is not None:
                rows, digest = self._audit_digest.lines, self._audit_digest.hexdigest()
                meta = lineage(self.source, self.generation, "audit", rows, digest)
                self.audit_output = PlannedOutput("audit", self.audit_path, rows, digest, meta)
        return outputs

    def abort(self) -> None:
        self.corrected.abort()
        self.quarantine.abort()
        if self.audit_file is not None:
            with suppress(OSError):  # a full disk fails the close too: still removed
                self.audit_file.close()
            self.audit_tmp.unlink(missing_ok=True)
