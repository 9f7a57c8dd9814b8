"""One remediation pass over one input: classify, correct, write corrected + quarantine + audit.

Invariants, checked at the end of every run (ConservationError otherwise): rows in = valid +
corrected + quarantined, and every row went to exactly one output, except the valid rows of an
input that was not rejected as a whole, which go to none (never re-sent: see `decide`). Same
input, rules, lineage and `now` give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remediation import fastpath, parallel
from remediation.changes import Context
from remediation.decide import RowDecider
from remediation.errors import ConservationError
from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage
from remediation.meters import Meter
from remediation.outcomes import Tally
from remediation.outputs import PlannedOutput
from remediation.ports import CustomerDirectory
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from remediation.rules import Rules
from remediation.sinks import AuditSink, Sinks
from remediation.validation import MeterIndex

PROGRESS_EVERY = 65536


@dataclass(slots=True)
class RemediationResult:
    summary: dict[str, Any]
    outputs: list[PlannedOutput] = field(default_factory=list)
    corrections: int = 0


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
) -> RemediationResult:
    """Correct what the rules allow, quarantine the rest; see the module docstring.

    `rejected`: every row of the input was rejected by Stripe (a failed-records file, the
    source of a whole-file failure, rows the poller refused), so its valid rows are re-sent
    too. Otherwise only rows carrying an error code or failing our validation are.
    `lineage`: which identifiers of the input we wrote (see `identifiers`)."""
    index = MeterIndex(meters, value_precision=rules.value_precision, limits=rules.policy.limits)
    ctx = Context(index, rules, now, customers)
    keep = identifiers == "keep"
    run = RowDecider(source, ctx, generation, keep, lineage or Lineage(), rejected)
    sinks = Sinks(out_dir, source, fmt, generation, columns, write, max_rows, on_audit)
    try:
        fast = fastpath.plan(records, sinks, columns)
        if fast is not None and _in_halves(records, sinks, run, meters, columns, customers):
            if on_progress is not None:
                on_progress(run.tally.input_rows)
        elif fast is not None:
            fastpath.run(fast, _fast_settings(run, sinks, on_progress), run.tally)
        else:
            _run_records(run, sinks, records, on_progress)
        outputs = sinks.finish(_summary_entry(run))
    except BaseException:
        sinks.abort()
        raise
    _check_conservation(run.tally, outputs, write, rejected)
    summary = _summary(source, generation, run.tally, outputs, sinks.audit_path)
    return RemediationResult(summary, outputs, run.tally.corrections)


def _run_records(
    run: RowDecider,
    sinks: Sinks,
    records: Iterable[UsageRecord],
    on_progress: Callable[[int], None] | None,
) -> None:
    for record in records:
        outcome = run.decide(record)
        run.tally.add(outcome)
        sinks.emit(outcome)
        if on_progress is not None and run.tally.input_rows % PROGRESS_EVERY == 0:
            on_progress(run.tally.input_rows)


def _in_halves(
    records: Iterable[UsageRecord],
    sinks: Sinks,
    run: RowDecider,
    meters: Sequence[Meter],
    columns: Sequence[str] | None,
    customers: CustomerDirectory | None,
) -> bool:
    """Remediate a large CSV file on two cores, if nothing needs this process per row."""
    if not isinstance(records, CsvRecords) or sinks.on_audit is not None or customers is not None:
        return False
    assert columns is not None
    ctx = run.ctx
    spec = parallel.RunSpec(
        run.source,
        run.generation,
        run.keep_ids,
        tuple(meters),
        ctx.rules,
        ctx.now,
        tuple(columns),
        run.lineage,
        run.rejected,
    )
    return parallel.remediate_halves(records, sinks, spec, run.tally, sinks.out_dir)


def _fast_settings(
    run: RowDecider, sinks: Sinks, on_progress: Callable[[int], None] | None
) -> fastpath.RunSettings:
    return fastpath.RunSettings(
        run.source,
        run.generation,
        run.ids,
        run.rejected,
        run.ctx,
        run.decide,
        sinks.emit,
        on_progress,
    )


def _summary_entry(run: RowDecider) -> dict[str, Any]:
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
