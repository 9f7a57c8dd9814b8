"""One remediation pass over one input: classify, correct, write corrected + quarantine + audit.

Invariants, checked at the end of every run (ConservationError otherwise): rows in = valid +
corrected + quarantined, and every row went to exactly one output. Same input, rules and `now`
give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from remediation import fastpath
from remediation.changes import Change, Context
from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.correctors import CORRECTORS
from remediation.errors import ConservationError, Uncorrectable
from remediation.filetypes import FileFormat
from remediation.identifiers import derive_identifier, split_generation
from remediation.meters import Meter
from remediation.outcomes import Outcome, Tally
from remediation.outputs import PlannedOutput
from remediation.ports import CustomerDirectory
from remediation.records import UsageRecord, classify_reported
from remediation.rules import Rules
from remediation.sinks import AuditSink, Sinks
from remediation.validation import MeterIndex, validate_record

MAX_ROUNDS = 4
PROGRESS_EVERY = 65536


@dataclass(slots=True)
class RemediationResult:
    summary: dict[str, Any]
    outputs: list[PlannedOutput] = field(default_factory=list)
    corrections: int = 0


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
        self.tally = Tally()

    def decide(self, record: UsageRecord) -> Outcome:
        """Where the row goes and what is recorded about it (nothing is written here)."""
        arrived, to_fix = self.classify(record)
        if arrived is None:
            record.identifier = self.new_identifier(record)
            return Outcome("valid", None, record, None, [])
        repeat = self.repeat_failure(record, arrived)
        if repeat is not None:
            return self.quarantine(record, arrived, arrived, repeat)
        if to_fix is None:
            reason = f"unknown code {arrived!r} and the row passes our validation (unclassified)"
            return self.quarantine(record, arrived, ErrorCode.UNCLASSIFIED, reason)
        try:
            fixed, changes = self.correct(record, to_fix)
        except Uncorrectable as exc:
            return self.quarantine(record, arrived, exc.code or to_fix, exc.reason)
        if not changes:
            reason = f"reported as {arrived} but there is nothing to correct"
            return self.quarantine(record, arrived, arrived, reason)
        fixed.identifier = self.new_identifier(record)
        audit = [self.correction_entry(record, fixed, arrived, change) for change in changes]
        return Outcome("corrected", arrived, fixed, None, audit, corrections=len(changes))

    def correction_entry(
        self, record: UsageRecord, fixed: UsageRecord, arrived: str, change: Change
    ) -> dict[str, Any]:
        return {
            "kind": "correction",
            "source": self.source,
            "row": record.row_number,
            "identifier": record.identifier,
            "new_identifier": fixed.identifier,
            "code": arrived,
            "rule": change.rule,
            "field": change.field,
            "before": change.before,
            "after": change.after,
        }

    def quarantine(self, record: UsageRecord, arrived: str, code: str, reason: str) -> Outcome:
        entry = {
            "kind": "quarantine",
            "source": self.source,
            "row": record.row_number,
            "identifier": record.identifier,
            "code": arrived,
            "mfx_code": code,
            "reason": reason,
        }
        unclassified = arrived not in KNOWN_CODES or code == ErrorCode.UNCLASSIFIED
        notes: dict[str, object] = {"mfx_code": code, "mfx_reason": reason}
        return Outcome("quarantined", arrived, record, notes, [entry], unclassified=unclassified)

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
    sinks = Sinks(out_dir, source, fmt, generation, columns, write, max_rows, on_audit)
    try:
        fast = fastpath.plan(records, sinks, columns)
        if fast is not None:
            fastpath.run(fast, _fast_settings(run, sinks, on_progress), run.tally)
        else:
            _run_records(run, sinks, records, on_progress)
        outputs = sinks.finish(_summary_entry(run))
    except BaseException:
        sinks.abort()
        raise
    _check_conservation(run.tally, outputs)
    summary = _summary(source, generation, run.tally, outputs, sinks.audit_path)
    return RemediationResult(summary, outputs, run.tally.corrections)


def _run_records(
    run: _Run,
    sinks: Sinks,
    records: Iterable[UsageRecord],
    on_progress: Callable[[int], None] | None,
) -> None:
    for record in records:
        outcome = run.decide(record)
        run.tally.add(outcome)
        emit(sinks, outcome)
        if on_progress is not None and run.tally.input_rows % PROGRESS_EVERY == 0:
            on_progress(run.tally.input_rows)


def _fast_settings(
    run: _Run, sinks: Sinks, on_progress: Callable[[int], None] | None
) -> fastpath.RunSettings:
    return fastpath.RunSettings(
        run.source,
        run.generation,
        run.keep_ids,
        run.ctx,
        run.decide,
        partial(emit, sinks),
        on_progress,
    )


def emit(sinks: Sinks, outcome: Outcome) -> None:
    """Write one decided row to its output and its entries to the audit trail."""
    if outcome.notes is None:
        sinks.corrected.write(outcome.record)
    else:
        sinks.quarantine.write(outcome.record, outcome.notes)
    for entry in outcome.audit:
        sinks.audit(entry)


def _summary_entry(run: _Run) -> dict[str, Any]:
    tally = run.tally
    return {
        "kind": "summary",
        "source": run.source,
        "generation": run.generation,
        "now": run.ctx.now,
        "input_rows": tally.input_rows,
        "valid": tally.valid,
        "corrected": tally.corrected,
        "quarantined": tally.quarantined,
    }


def _check_conservation(tally: Tally, outputs: list[PlannedOutput]) -> None:
    if tally.input_rows != tally.valid + tally.corrected + tally.quarantined:
        raise ConservationError(
            f"rows in {tally.input_rows} != valid {tally.valid} + "
            f"corrected {tally.corrected} + quarantined {tally.quarantined}"
        )
    written = sum(output.rows for output in outputs)
    if outputs and written != tally.input_rows:
        raise ConservationError(f"{written} rows written for {tally.input_rows} rows in")


def _summary(
    source: str, generation: int, tally: Tally, outputs: list[PlannedOutput], audit: Path | None
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
