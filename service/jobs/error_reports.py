"""Remediate the rows a meter error report is about, when we imported them ourselves.

Samples were linked to (object, row) when the report was stored (the poller records
identifier -> object in `imported_rows`, in import and index mode). Every linked object is
read again and every row of the reported event names failing with a reported code is
remediated (see remediation.reported), one run per (report, object). Stripe samples only a
few rows: when the rows found fall short of the report's error count, the other objects we
saw around the report's window holding rows of those event names are searched too; if the
count is still not reached the report is marked `partial` and an alert says so.

Rows another run over the same object already handled (corrected or quarantined: the same
identifier, wherever the object holds it now) are skipped, so no row is sent twice, and counted
as found in an object holding sampled rows (in one found by the search, they are an earlier
report's); a row without an identifier has one made of its object's version, so none of a
new version is taken for one of the old. Only rows Stripe refused
whenever it took them are selected (remediation.reported, `when_taken`). A report with no
linked rows is kept as it is, with its samples (`unmatched`: its meter's warning says so, and
a poll pass that records its rows within a day takes it up, `poller.handover`).

The objects holding sampled rows are read first (`report_linked`), then one run is done per
object (`report_runs`); the report's status and alert come last (`report_outcome`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import Engine

from remediation.reported import ReportScope
from remediation.validation import MeterIndex
from service.errors import TaskInputMissing
from service.jobs.inputs import JobDeps
from service.jobs.report_job import Report, TakenLongBefore
from service.jobs.report_linked import linked_files
from service.jobs.report_objects import linked_objects, other_objects, recorded_now
from service.jobs.report_outcome import conclude
from service.jobs.report_runs import remediate_linked, remediate_others
from service.jobs.run_context import RunContext
from service.jobs.store.report_records import load_report, set_report_status
from service.models import ErrorReport, ErrorReportStatus, ErrorSample
from service.models._types import as_utc, utcnow
from service.poller.store import event_names_of, first_versions


def remediate_error_report(deps: JobDeps, event_id: str) -> str:
    outcome, waiting = _remediate_report(deps, event_id)
    for _ in range(TAKEN_UP_AT_ONCE):
        # a poll pass that recorded the version there now while the task ran found the
        # report not `partial` yet, so it did not take it up again (`poller.handover`); no
        # later pass records that version again: checked after the report was marked
        if not recorded_now(deps.run, waiting):
            break
        set_report_status(deps.run.engine, event_id, ErrorReportStatus.RECORDED)
        outcome, waiting = _remediate_report(deps, event_id)
    return outcome


# How many times in a row a task takes its report up again for versions recorded meanwhile
# (each time the object was rewritten again while it ran; a later pass takes it up after).
TAKEN_UP_AT_ONCE = 3


def _remediate_report(deps: JobDeps, event_id: str) -> tuple[str, list[str]]:
    """The task's outcome, and the objects overwritten by a version the poller had not
    recorded when it read them (the report is `partial` waiting for them)."""
    ctx = deps.run
    report, samples, counts = _load(ctx.engine, event_id)
    linked = linked_objects(ctx.engine, samples)
    if not linked:
        set_report_status(ctx.engine, event_id, ErrorReportStatus.UNMATCHED)
        return "no rows of ours: kept unmatched with its samples", []
    job = _job(ctx, report, samples, counts)
    firsts = first_versions(ctx.engine, set(job.scope.samples))
    with tempfile.TemporaryDirectory(prefix="meterfix-obj-") as tmp:
        files = linked_files(ctx, job, linked, firsts, Path(tmp))
        others = other_objects(ctx.engine, report, job, set(linked))
        job.objects = set(linked) | {key for key, _ in others}
        found = remediate_linked(ctx, job, files)
        found = remediate_others(ctx, job, others, Path(tmp), found)
    outcome = conclude(ctx.engine, job, found)
    return outcome, job.unrecorded if found < job.expected else []


def _job(
    ctx: RunContext, report: ErrorReport, samples: list[ErrorSample], counts: dict[str, int]
) -> Report:
    meter_name = _event_name(ctx, report.meter_id)
    names = _sampled_event_names(ctx.engine, samples) | ({meter_name} if meter_name else set())
    reference = as_utc(report.validation_end) or as_utc(report.created_at) or utcnow()
    start = as_utc(report.validation_start)
    now = int(reference.timestamp())
    begins = None if start is None else int(start.timestamp())
    return Report(
        event_id=report.event_id,
        scope=ReportScope(
            codes=frozenset(counts) | {s.code for s in samples},
            samples={s.identifier: s.code for s in samples if s.identifier},
            event_name=meter_name,
        ),
        # the most the report counts (its total beside per-code counts was ignored: found 1
        # of the 5 Stripe counted, the report was `remediated`, not `partial`)
        expected=max(report.error_count or 0, sum(counts.values()), len(samples)),
        event_names=names,
        now=now,
        start=begins,
        index=MeterIndex(
            ctx.meters,
            value_precision=ctx.rules.value_precision,
            limits=ctx.rules.policy.limits,
        ),
        long_before=TakenLongBefore(ctx, begins if begins is not None else now),
    )


def _load(engine: Engine, event_id: str) -> tuple[ErrorReport, list[ErrorSample], dict[str, int]]:
    found = load_report(engine, event_id)
    if found is None:
        raise TaskInputMissing(f"error report {event_id} is not recorded")
    return found


def _sampled_event_names(engine: Engine, samples: list[ErrorSample]) -> set[str]:
    return event_names_of(engine, {s.identifier for s in samples if s.identifier})


def _event_name(ctx: RunContext, meter_id: str | None) -> str | None:
    for meter in ctx.meters:
        if meter_id and meter.id == meter_id:
            return meter.event_name
    return None
