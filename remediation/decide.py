"""How one row is decided: classify, correct (a few rounds), or quarantine with a reason.

`RowDecider.decide` writes nothing; the engine and the fast path write what it returns.
Billing safety: a row is re-sent only if it was rejected (it carries an error code, or the
whole input holds rejected rows only: `rejected`) or if our validation proves Stripe rejects
it and we corrected it. Any other row is `valid` and goes to no output (`Outcome.write`).
"""

from __future__ import annotations

from typing import Any

from remediation.changes import Change, Context
from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.correctors import CORRECTORS
from remediation.errors import Uncorrectable
from remediation.identifiers import Identifiers, Lineage
from remediation.outcomes import Outcome, Tally
from remediation.records import UsageRecord, classify_reported
from remediation.validation import validate_record

MAX_ROUNDS = 4


class RowDecider:
    def __init__(
        self,
        source: str,
        ctx: Context,
        generation: int,
        keep_ids: bool,
        lineage: Lineage,
        rejected: bool,
    ) -> None:
        self.source, self.ctx, self.generation = source, ctx, generation
        self.keep_ids, self.lineage, self.rejected = keep_ids, lineage, rejected
        self.ids = Identifiers(source, generation, lineage, keep_ids)
        self.tally = Tally()

    def decide(self, record: UsageRecord) -> Outcome:
        """Where the row goes and what is recorded about it (nothing is written here)."""
        arrived, to_fix = self.classify(record)
        if arrived is None:
            if not (self.rejected or record.error_code or record.error_message):
                # never rejected: it may have been billed, so it is never re-sent
                return Outcome("valid", None, record, None, [], write=False)
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
        """A row we corrected (per lineage) that fails again with the same code stays out."""
        ancestor = self.lineage.ancestors.get(record.identifier or "")
        if ancestor is None or ancestor.code != code:
            return None
        return f"failed again with {code} after correction in generation {ancestor.generation}"

    def new_identifier(self, record: UsageRecord) -> str | None:
        return self.ids.new(record.identifier, record.row_number)
