"""One remediation pass over one input: classify, correct, write corrected + quarantine + audit.

Invariants, checked at the end of every run (ConservationError otherwise): rows in = valid +
corrected + quarantined, and every row went to exactly one output. Same input, rules and `now`
give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from remediation.changes import Change, Context
from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.correctors import CORRECTORS
from remediation.errors import ConservationError, Uncorrectable
from remediation.filetypes import FileFormat
from remediation.identifiers import derive_identifier, split_generation
from remediation.meters import Meter
from remediation.outputs import MAX_ROWS as MAX_OUTPUT_ROWS
from remediation.outputs import OutputSet, PlannedOutput, source_stem
from remediation.ports import CustomerDirectory
from remediation.records import QUARANTINE_FIELDS, UsageRecord, classify_reported
from remediation.rules import Rules
from remediation.validation import MeterIndex, validate_record

MAX_ROUNDS = 4
AuditSink = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class RemediationResult:
    summary: dict[str, Any]
    outputs: list[PlannedOutput] = field(default_factory=list)
    corrections: int = 0


@dataclass(slots=True)
class _Tally:
    input_rows: int = 0
    valid: int = 0
    corrected: int = 0
    quarantined: int = 0
    unclassified: int = 0
    corrections: int = 0
    by_code: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, code: str, outcome: str) -> None:
        slot = self.by_code.setdefault(code, {"corrected": 0, "quarantined": 0})
        slot[outcome] += 1


class _Run:
    def __init__(
        self,
        source: str,
        ctx: Context,
        generation: int,
        keep_ids: bool,
        previous_codes: Mapping[str, str] | None,
    ) -> None:
        self.source, self.ctx, self.generation = source, ctx, generation
        self.keep_ids, self.previous_codes = keep_ids, previous_codes
        self.tally = _Tally()

    def classify(self, record: UsageRecord) -> tuple[str | None, str | None]:
        """(code the row arrived with or was classified with, code to correct)."""
        reported = classify_reported(record.error_code, record.error_message)
        if reported in CORRECTORS:
            return reported, reported
        problem = validate_record(record, self.ctx.index, self.ctx.now)
        if reported is None:
            return (problem.code, problem.code) if problem else (None, None)
        # Unknown code: correct what our validation finds; if nothing, quarantine unclassified.
        return reported, problem.code if problem else None

    def correct(self, record: UsageRecord, code: str) -> tuple[UsageRecord, list[Change]]:
        work = UsageRecord(
            record.row_number,
            record.identifier,
            record.timestamp,
            record.event_name,
            dict(record.payload),
            record.extra,
            record.error_code,
            record.error_message,
            record.malformed,
        )
        changes: list[Change] = []
        seen: set[str] = set()
        current: str | None = code
        for _ in range(MAX_ROUNDS):
            if current is None:
                return work, changes
            corrector = CORRECTORS.get(current)
            if corrector is None or current in seen:
                raise Uncorrectable(f"{current}: still failing after correction", current)
            seen.add(current)
            try:
                changes += corrector(work, self.ctx)
            except Uncorrectable as exc:
                raise Uncorrectable(exc.reason, current) from None
            problem = validate_record(work, self.ctx.index, self.ctx.now)
            current = problem.code if problem else None
        raise Uncorrectable("too many problems in one row", current)

    def repeat_failure(self, record: UsageRecord, code: str) -> str | None:
        """A row we already corrected once that fails again with the same code stays out."""
        if not record.identifier:
            return None
        _, generation = split_generation(record.identifier)
        if generation == 0:
            return None
        if self.previous_codes is None:
            return f"already corrected in generation {generation} and reported again"
        if self.previous_codes.get(record.identifier) == code:
            return f"failed again with {code} after correction in generation {generation}"
        return None

    def new_identifier(self, record: UsageRecord) -> str | None:
        if self.keep_ids:
            return record.identifier
        return derive_identifier(record.identifier, self.source, record.row_number, self.generation)


def remediate(
    records: Iterable[UsageRecord],
    *,
    source: str,
    fmt: FileFormat,
    meters: Sequence[Meter],
    rules: Rules,
    now: int,
    out_dir: Path,
    generation: int = 1,
    identifiers: str = "derive",
    write: bool = True,
    customers: CustomerDirectory | None = None,
    on_audit: AuditSink | None = None,
    columns: Sequence[str] | None = None,
    previous_codes: Mapping[str, str] | None = None,
    max_rows: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RemediationResult:
    """Correct what the rules allow, quarantine the rest; see the module docstring."""
    index = MeterIndex(meters, value_precision=rules.value_precision)
    ctx = Context(index, rules, now, customers)
    run = _Run(source, ctx, generation, identifiers == "keep", previous_codes)
    sinks = _Sinks(out_dir, source, fmt, generation, columns, write, max_rows, on_audit)
    try:
        for record in records:
            _process(run, sinks, record)
            if on_progress is not None and run.tally.input_rows % 65536 == 0:
                on_progress(run.tally.input_rows)
        outputs = sinks.finish(run)
    except BaseException:
        sinks.abort()
        raise
    _check_conservation(run.tally, outputs)
    summary = _summary(source, generation, run.tally, outputs, sinks.audit_path)
    return RemediationResult(summary, outputs, run.tally.corrections)


def _process(run: _Run, sinks: _Sinks, record: UsageRecord) -> None:
    tally = run.tally
    tally.input_rows += 1
    arrived, to_fix = run.classify(record)
    if arrived is None:
        tally.valid += 1
        record.identifier = run.new_identifier(record)
        sinks.corrected.write(record)
        return
    repeat = run.repeat_failure(record, arrived)
    if repeat is not None:
        return _quarantine(run, sinks, record, arrived, arrived, repeat)
    if to_fix is None:
        reason = f"unknown code {arrived!r} and the row passes our validation (unclassified)"
        return _quarantine(run, sinks, record, arrived, ErrorCode.UNCLASSIFIED, reason)
    try:
        fixed, changes = run.correct(record, to_fix)
    except Uncorrectable as exc:
        return _quarantine(run, sinks, record, arrived, exc.code or to_fix, exc.reason)
    if not changes:
        reason = f"reported as {arrived} but there is nothing to correct"
        return _quarantine(run, sinks, record, arrived, arrived, reason)
    fixed.identifier = run.new_identifier(record)
    tally.corrected += 1
    tally.corrections += len(changes)
    tally.count(arrived, "corrected")
    sinks.corrected.write(fixed)
    for change in changes:
        sinks.audit(
            {
                "kind": "correction",
                "source": run.source,
                "row": record.row_number,
                "identifier": record.identifier,
                "new_identifier": fixed.identifier,
                "code": arrived,
                "rule": change.rule,
                "field": change.field,
                "before": change.before,
                "after": change.after,
            }
        )


def _quarantine(
    run: _Run, sinks: _Sinks, record: UsageRecord, arrived: str, code: str, reason: str
) -> None:
    tally = run.tally
    tally.quarantined += 1
    tally.count(arrived, "quarantined")
    if arrived not in KNOWN_CODES or code == ErrorCode.UNCLASSIFIED:
        tally.unclassified += 1
    sinks.quarantine.write(record, {"mfx_code": code, "mfx_reason": reason})
    sinks.audit(
        {
            "kind": "quarantine",
            "source": run.source,
            "row": record.row_number,
            "identifier": record.identifier,
            "code": arrived,
            "mfx_code": code,
            "reason": reason,
        }
    )


class _NullSet:
    rows = 0

    def write(self, record: UsageRecord, notes: Mapping[str, object] | None = None) -> None:
        self.rows += 1

    def finish(self) -> list[PlannedOutput]:
        return []

    def abort(self) -> None:
        return None


class _Sinks:
    """Where rows go: corrected and quarantine output sets, and the audit trail."""

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
    ) -> None:
        limit = max_rows or MAX_OUTPUT_ROWS
        self.corrected: OutputSet | _NullSet = _NullSet()
        self.quarantine: OutputSet | _NullSet = _NullSet()
        self.audit_path: Path | None = None
        self._audit_file: TextIO | None = None
        self._on_audit = on_audit
        if write:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.corrected = OutputSet(
                out_dir, source, "corrected", fmt, generation, columns=columns, max_rows=limit
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
            )
            name = f"{source_stem(source)[:200]}.r{generation}.audit.jsonl"
            self.audit_path = (out_dir / name).resolve()
            self._audit_tmp = out_dir / f".{name}.tmp"
            self._audit_file = open(self._audit_tmp, "w", encoding="utf-8")  # noqa: SIM115

    def audit(self, entry: dict[str, Any]) -> None:
        if self._audit_file is not None:
            self._audit_file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        if self._on_audit is not None:
            self._on_audit(entry)

    def finish(self, run: _Run) -> list[PlannedOutput]:
        outputs = self.corrected.finish() + self.quarantine.finish()
        tally = run.tally
        self.audit(
            {
                "kind": "summary",
                "source": run.source,
                "generation": run.generation,
                "now": run.ctx.now,
                "input_rows": tally.input_rows,
                "valid": tally.valid,
                "corrected": tally.corrected,
                "quarantined": tally.quarantined,
            }
        )
        if self._audit_file is not None and self.audit_path is not None:
            self._audit_file.close()
            self._audit_tmp.replace(self.audit_path)
        return outputs

    def abort(self) -> None:
        self.corrected.abort()
        self.quarantine.abort()
        if self._audit_file is not None:
            self._audit_file.close()
            self._audit_tmp.unlink(missing_ok=True)


def _check_conservation(tally: _Tally, outputs: list[PlannedOutput]) -> None:
    if tally.input_rows != tally.valid + tally.corrected + tally.quarantined:
        raise ConservationError(
            f"rows in {tally.input_rows} != valid {tally.valid} + "
            f"corrected {tally.corrected} + quarantined {tally.quarantined}"
        )
    written = sum(output.rows for output in outputs)
    if outputs and written != tally.input_rows:
        raise ConservationError(f"{written} rows written for {tally.input_rows} rows in")


def _summary(
    source: str, generation: int, tally: _Tally, outputs: list[PlannedOutput], audit: Path | None
) -> dict[str, Any]:
    return {
        "source": source,
        "generation": generation,
        "input_rows": tally.input_rows,
        "valid": tally.valid,
        "corrected": tally.corrected,
        "quarantined": tally.quarantined,
        "unclassified": tally.unclassified,
        "corrections": tally.corrections,
        "by_code": {code: tally.by_code[code] for code in sorted(tally.by_code)},
        "outputs": {
            "corrected": [str(o.path) for o in outputs if o.kind == "corrected"],
            "quarantine": [str(o.path) for o in outputs if o.kind == "quarantine"],
            "audit": str(audit) if audit else None,
        },
    }
