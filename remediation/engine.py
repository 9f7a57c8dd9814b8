"""One remediation pass over one input: classify, correct, write corrected + quarantine + audit.

Invariants, checked at the end of every run (ConservationError otherwise): rows in = valid +
corrected + quarantined, and every row went to exactly one output, except the valid rows of an
input that was not rejected as a whole, which go to none (never re-sent: see `decide`). Same
input, rules, lineage and `now` give byte-identical files.

The input's batches are read by `batching` (`batches`, importable from here too), written one
behind the decider by `writebehind`, and the process's memory held for the run by `memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from remediation.batching import batches
from remediation.changes import Context, FileRepairs
from remediation.core.csvout import CsvOut
from remediation.core.decide import BatchDecider
from remediation.core.decided import Decided
from remediation.core.heldback import HeldBack
from remediation.core.jsonlout import JsonlOut
from remediation.core.leftout import without
from remediation.core.recordout import RecordOut
from remediation.core.sameids import TakenElsewhere
from remediation.errors import ConservationError
from remediation.filetypes import FileFormat
from remediation.identifiers import Identifiers, Lineage
from remediation.memory import FEWER_COLLECTIONS, RUN_POOL, HeapTrim, use_lean_allocators
from remediation.meters import Meter, customer_keys
from remediation.outcomes import AuditSink, QuarantinedRow, Tally
from remediation.outputs import PlannedOutput
from remediation.ports import CustomerDirectory, LeavesOut
from remediation.readers import CsvRecords
from remediation.records import PAYLOAD_PREFIX, UsageRecord
from remediation.repair import InputPlan
from remediation.rules import Rules
from remediation.sinks import Sinks
from remediation.validation import MeterIndex
from remediation.writebehind import WriteBehind

# `batches` moved to `batching`; the service, the poller and tests still import it from here.
__all__ = ["RemediationResult", "batches", "remediate"]


@dataclass(slots=True)
class RemediationResult:
    summary: dict[str, Any]
    outputs: list[PlannedOutput] = field(default_factory=list)
    corrections: int = 0
    audit: PlannedOutput | None = None  # the audit file as an output, when asked for


Audited = tuple[pa.RecordBatch, Sequence[QuarantinedRow]]


def _header_aliases(plan: InputPlan | None, records: Iterable[UsageRecord]) -> dict[str, str]:
    """The payload keys a CSV input's repaired header renamed from an alias, to the alias.
    From the plan: the records a run reads may be another iterator over the `CsvRecords`
    (rows left out, renumbered), and the rows Stripe read without their customer were then
    counted valid, never re-sent."""
    if plan is not None:
        renamed: Mapping[str, str] = dict(plan.renamed)
    elif isinstance(records, CsvRecords):
        renamed = records.renamed
    else:
        return {}
    return {
        column.removeprefix(PAYLOAD_PREFIX): alias
        for column, alias in renamed.items()
        if column.startswith(PAYLOAD_PREFIX)
    }


def _file_repairs(plan: InputPlan | None, records: Iterable[UsageRecord]) -> FileRepairs:
    """What a CSV input's whole-file repair changed in its rows' values (`core.filerepairs`)."""
    if plan is not None:
        return FileRepairs(plan.event_name_fill)
    if isinstance(records, CsvRecords):
        return FileRepairs(records.event_name_fill)
    return FileRepairs()


def _decimal_comma(plan: InputPlan | None, records: Iterable[UsageRecord]) -> bool:
    """Whether a CSV input is delimited by `;`, whose writers' `,` is the decimal mark."""
    if plan is not None:
        return plan.fmt is FileFormat.CSV and plan.delimiter == ";"
    return isinstance(records, CsvRecords) and records.delimiter == ";"


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
    lineage: Lineage | None = None,
    rejected: bool = False,
    max_rows: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    audit_output: bool = False,
    loop_protection: bool = True,
    leave_out: Sequence[LeavesOut] = (),
    plan: InputPlan | None = None,
) -> RemediationResult:
    """Correct what the rules allow, quarantine the rest; see the module docstring.

    `audit_output`: the audit file is hashed and its lines counted as it is written, and comes
    back as an output (`RemediationResult.audit`) for a caller that uploads it.

    `rejected`: every row of the input was rejected by Stripe (a failed-records file, the
    source of a whole-file failure, rows the poller refused), so its valid rows are re-sent
    too. Otherwise only rows carrying an error code or failing our validation are.
    `lineage`: which identifiers of the input we wrote (see `identifiers`).
    `loop_protection`: a row we corrected (per lineage) that fails again with the same code is
    quarantined, not corrected again; off only for an operator's explicit re-run of
    quarantined rows after a rules change (service.jobs.quarantine_rerun).
    `leave_out`: rows left out of the run by identifier, each batch as it is read
    (`core.leftout`): not read, written or counted.
    `plan`: how the input was read (`repair.plan_input`): its whole-file repairs are said in
    the summary (and its audit line), the run's; the values they changed in the audit of
    each row (`core.filerepairs`). Without it, what `records` tells (a `CsvRecords`)."""
    use_lean_allocators()
    rules = replace(rules, decimal_comma=rules.decimal_comma or _decimal_comma(plan, records))
    index = MeterIndex(meters, value_precision=rules.value_precision, limits=rules.policy.limits)
    ctx = Context(
        index,
        rules,
        now,
        customers,
        header_aliases=_header_aliases(plan, records),
        file_repairs=_file_repairs(plan, records),
    )
    repairs = plan.repairs if plan is not None else ()
    ids = Identifiers(source, generation, lineage or Lineage(), identifiers == "keep")
    decider = BatchDecider(ctx, lineage or Lineage(), rejected, loop_protection)
    # The audit records of the batch being written (on the writer's thread); `put` hands them
    # over with the batch, and `written` passes them on from this thread.
    held: list[Audited] = []
    handed = None if on_audit is None else lambda *records: held.append(records)
    sinks = Sinks(
        out_dir,
        source,
        fmt,
        generation,
        columns,
        write,
        max_rows,
        handed,
        audit_output=audit_output,
        customer_keys=customer_keys(meters),
        kept=identifiers == "keep",
    )
    tally = Tally()
    trim_heap = HeapTrim()
    as_bytes = _bytes_writer(records, fmt, columns, write, sinks, ids, source)
    out = _BatchOut(as_bytes, RecordOut(sinks, ids, source), tally, held, on_audit, on_progress)
    try:
        _decide_and_write(records, leave_out, decider, out, trim_heap, out_dir if write else None)
        outputs = sinks.finish(_summary_entry(source, generation, now, tally, repairs))
    except BaseException:
        sinks.abort()
        raise
    _check_conservation(tally, outputs, write, rejected)
    summary = _summary(source, generation, tally, outputs, sinks.audit_path)
    summary["repairs"] = list(repairs)
    return RemediationResult(summary, outputs, tally.corrections, sinks.audit_output)


def _bytes_writer(
    records: Iterable[UsageRecord],
    fmt: FileFormat,
    columns: Sequence[str] | None,
    write: bool,
    sinks: Sinks,
    ids: Identifiers,
    source: str,
) -> CsvOut | JsonlOut | None:
    """The writer of a run's rows as bytes, when its input and outputs allow one."""
    if columns and _bytes_out(records, write):
        return CsvOut(sinks, columns, ids, source)
    if fmt in (FileFormat.JSONL, FileFormat.JSON) and write:
        return JsonlOut(sinks, ids, source)
    return None


class _BatchOut:
    """Writes each decided batch (`put`, on the writer's thread) and passes its audit records
    and the rows read so far on (`written`, on the run's thread, in batch order)."""

    def __init__(
        self,
        as_bytes: CsvOut | JsonlOut | None,
        as_records: RecordOut,
        tally: Tally,
        held: list[Audited],
        on_audit: AuditSink | None,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        self.as_bytes, self.as_records, self.tally, self.held = as_bytes, as_records, tally, held
        self.on_audit, self.on_progress = on_audit, on_progress

    def put(self, decided: Decided) -> tuple[list[Audited], int]:
        if self.as_bytes is None or not self.as_bytes.write(decided, self.tally):
            self.as_records.write(decided, self.tally)
        audited = self.held[:]
        self.held.clear()
        return audited, self.tally.input_rows

    def written(self, done: tuple[list[Audited], int]) -> None:  # on this thread, in batch order
        audited, rows = done
        for records in audited:
            assert self.on_audit is not None
            self.on_audit(*records)
        if self.on_progress is not None:
            self.on_progress(rows)


def _decide_and_write(
    records: Iterable[UsageRecord],
    leave_out: Sequence[LeavesOut],
    decider: BatchDecider,
    out: _BatchOut,
    trim_heap: HeapTrim,
    out_dir: Path | None,
) -> None:
    """Decides each batch as it is read, and writes it one behind (`WriteBehind`); once a row
    of an input that is not rejected-only was corrected, the batches are held back (on disk,
    under `out_dir` when written) and written at the end (`decide.BatchDecider.amend`); a run
    that writes nothing counts them as they come and amends its counts at the end. A
    `TakenElsewhere` of `leave_out` leaves no row out: the rows going out under an identifier
    it holds are quarantined."""
    behind = out.on_audit is not None or not isinstance(records, CsvRecords)
    held = HeldBack(out_dir)
    # a run that writes nothing (validation) holds nothing back: its counts are amended
    counting = out_dir is None and out.on_audit is None and decider.same is not None
    if counting:
        assert decider.same is not None
        decider.same.counting = True
    try:
        with (
            FEWER_COLLECTIONS,
            RUN_POOL,
            WriteBehind(out.put, out.written, out_dir is not None, behind) as writer,
        ):
            taken = None if decider.same is None else decider.same.taken
            elsewhere = [held for held in leave_out if isinstance(held, TakenElsewhere)]
            leave_out = [rows for rows in leave_out if not isinstance(rows, TakenElsewhere)]
            for batch in without(batches(records, ahead=writer.ahead), leave_out, taken):
                decided = decider.decide(batch)
                del batch  # freed before the next batch is read, not after
                for stripe_took in elsewhere:
                    stripe_took.hold(decided)
                if not counting and (held.count or decider.holds_back()):
                    held.put(decided)
                else:
                    writer.put(decided)
                del decided
                trim_heap()
            for decided in held.batches():
                writer.put(decider.amend(decided))
                del decided
                trim_heap()
        if counting:
            assert decider.same is not None
            decider.same.recount(out.tally)
    finally:
        held.close()
        if decider.same is not None:
            decider.same.close()


def _bytes_out(records: Iterable[UsageRecord], write: bool) -> bool:
    """A CSV read as columns, written in known columns: its rows are written as bytes."""
    return isinstance(records, CsvRecords) and write


def _summary_entry(
    source: str, generation: int, now: int, tally: Tally, repairs: Sequence[str]
) -> dict[str, Any]:
    entry = {
        "kind": "summary",
        "source": source,
        "generation": generation,
        "now": now,
        "input_rows": tally.input_rows,
        "valid": tally.valid,
        "corrected": tally.corrected,
        "quarantined": tally.quarantined,
    }
    if repairs:  # a file read as it is: the line as before
        entry["repairs"] = list(repairs)
    return entry


def _check_conservation(
    tally: Tally, outputs: list[PlannedOutput], write: bool, rejected: bool
) -> None:
    if tally.input_rows != tally.valid + tally.corrected + tally.quarantined:
        raise ConservationError(
            f"rows in {tally.input_rows} != valid {tally.valid} + "
            f"corrected {tally.corrected} + quarantined {tally.quarantined}"
        )
    if tally.valid_kept > tally.valid or (rejected and tally.valid_kept):
        # every row of a rejected input goes to an output; others keep only valid rows out
        raise ConservationError(f"{tally.valid_kept} valid rows kept out of {tally.valid} valid")
    written = sum(output.rows for output in outputs)
    if write and written != tally.written():
        raise ConservationError(
            f"{written} rows written for {tally.input_rows} rows in "
            f"({tally.valid_kept} valid rows never rejected, never re-sent)"
        )


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
