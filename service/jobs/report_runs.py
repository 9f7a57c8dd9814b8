"""The runs over the objects an error report is about, one per object, and the rows each finds.

The objects holding sampled rows first (`remediate_linked`), then those found around the
report's window until the report's count is reached (`remediate_others`). Each run is done
under the object's lock over the rows the report selects (`report_rows.Reported`), less those
Stripe took from another object the task reads; a retried task whose run is done counts them
again without a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from remediation.core.leftout import without
from remediation.core.sameids import TakenElsewhere
from remediation.engine import batches
from remediation.errors import UnreadableFile
from remediation.repair import InputPlan, read_repaired
from remediation.reported import ReportScope, Selection, Taken
from remediation.rowdigest import text_digests
from remediation.rownames import RowNames
from service.adapters.bucket import object_tag
from service.jobs.input_lineage import run_lineage, source_lineage
from service.jobs.object_runs import object_sources, one_run_an_object
from service.jobs.report_job import Report
from service.jobs.report_objects import fetch
from service.jobs.report_rows import HeldFirst, Reported
from service.jobs.report_versions import when_taken
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.runs import execute_run, run_done
from service.jobs.stages import Stage, Stages
from service.jobs.store.lineage import handled_identifiers, runs_correcting
from service.jobs.store.runs import report_run_key
from service.models import RunTrigger


def _taken_elsewhere(job: Report, key: str) -> list[TakenElsewhere]:
    """The identifiers of the object's rows Stripe took an event under from another object
    the report's task reads (`job.took`), each naming the first such object."""
    by_source: dict[str, list[str]] = {}
    for identifier, keys in job.took.items():
        others = [other for other in keys if other != key]
        if others:
            by_source.setdefault(others[0], []).append(identifier)
    return [
        TakenElsewhere(text_digests(pa.array(sorted(ids), pa.string())), source)
        for source, ids in sorted(by_source.items())
    ]


def remediate_linked(
    ctx: RunContext, job: Report, files: dict[str, tuple[str, Path, InputPlan]]
) -> int:
    """Remediate the linked objects' rows, by key; how many rows the report is about they hold."""
    found = 0
    for key in sorted(files):
        version, path, plan = files[key]
        taken = when_taken(ctx.engine, job, key, version, linked=True)
        found += _remediate(ctx, job, key, version, path, plan, taken, linked=True)
    return found


def remediate_others(
    ctx: RunContext, job: Report, others: list[tuple[str, str]], folder: Path, found: int
) -> int:
    """Remediate the other objects' rows until `found` reaches the report's count; the rows
    found then."""
    for key, etag in others:
        if found >= job.expected:
            break
        fetched = fetch(ctx, job, key, etag, folder)
        if fetched is not None:
            taken = when_taken(ctx.engine, job, key, etag, linked=False)
            found += _remediate(ctx, job, key, *fetched, taken, linked=False)
    return found


def _remediate(
    ctx: RunContext,
    job: Report,
    key: str,
    etag: str,
    path: Path,
    plan: InputPlan,
    taken: Taken,
    *,
    linked: bool,
) -> int:
    """Remediate the rows of one object the report is about; how many it holds: those this
    run selected and, in an object holding sampled rows (`linked`), those another run over
    the object handled (corrected or quarantined) before, under the same identifiers, which
    are not selected again (`_counted`)."""
    lock_turn = one_run_an_object(ctx.engine, ctx.bucket.prefix, key, ctx.waiting_turn)
    with lock_turn as lock, _naming(key):
        ctx = ctx.holding(lock)  # its run uploads and commits nothing once the lock is lost
        run_key = report_run_key(job.event_id, key)
        base = job.scope
        # the object's runs, and those of its import sets' failed-records files (the same rows)
        sources = object_sources(ctx.engine, ctx.bucket, key)
        handled = handled_identifiers(ctx.engine, sources, other_than=run_key)
        changed = job.altered.get(key, {})
        sampled = job.sampled.get(key)
        shared = frozenset(sampled.shared) if sampled is not None else frozenset()
        scope = ReportScope(base.codes, base.samples, base.event_name, handled, changed, shared)
        selection = Selection(
            first=job.first,
            source=key,
            handled_first=job.handled_first,
            refused_first=job.refused_first,
        )
        runs = runs_correcting(ctx.engine, sources)
        held = HeldFirst(ctx.engine, job, (key, etag), runs, ctx.customer_records)
        rows = Reported(RowNames(key, etag), held, job, scope, taken, selection)
        done = run_done(ctx, run_key)
        if done is not None:  # a retried task: count what the run found, and the rows handled
            _read_through(ctx, path, plan, rows)
            return _counted(job, key, done.input_rows, selection, scope, held.billed, linked)
        request = _run_request(ctx, job, key, run_key, path, plan)
        with path.open("rb") as stream:  # read in columns, the report's rows selected
            records = read_repaired(stream, plan, ctx.rules)
            run = execute_run(ctx, request, records, [rows, *_taken_elsewhere(job, key)])
        return _counted(job, key, run.input_rows, selection, scope, held.billed, linked)


@contextmanager
def _naming(key: str) -> Iterator[None]:
    """An object that cannot be read past its start ends the task: its "cannot remediate"
    alert names it (`task_runner`; it named no file)."""
    try:
        yield
    except UnreadableFile as exc:
        exc.source = exc.source or key
        raise


def _read_through(ctx: RunContext, path: Path, plan: InputPlan, rows: Reported) -> None:
    """Read the object past the report's rows, which count what they select, with no run."""
    with path.open("rb") as stream:
        for _ in without(batches(read_repaired(stream, plan, ctx.rules)), [rows]):
            pass


def _run_request(
    ctx: RunContext, job: Report, key: str, run_key: str, path: Path, plan: InputPlan
) -> RunRequest:
    """The run over one object the report is about, with its lineage (traced in the run's
    `LINEAGE` stage)."""
    stages = Stages()
    with stages.timing(Stage.LINEAGE):
        # above the object's generation, and any that wrote one of its identifiers
        origin = source_lineage(ctx.bucket, key)
        generation, lineage, traced_from = run_lineage(
            ctx.engine, path, ctx.rules, key, origin.generation + 1, origin.derived
        )
    return RunRequest(
        run_key=run_key,
        trigger=RunTrigger.ERROR_REPORT,
        source=key,
        tag=object_tag(f"report-{job.event_id}", ctx.bucket, key, job.objects),
        fmt=plan.fmt,
        now=job.now,
        generation=generation,
        columns=plan.columns or None,
        lineage=lineage,
        input_generation=traced_from,
        rejected=False,  # an object that was imported: only the reported rows are re-sent
        stages=stages,
        plan=plan,
    )


def _counted(
    job: Report,
    key: str,
    selected: int,
    selection: Selection,
    scope: ReportScope,
    unsampled: int,
    linked: bool,
) -> int:
    """The rows of one object the report is about, found: those selected, those another run
    handled, and the rows left to Stripe's connector (taken again from a later version, or
    taken from an earlier one long before the report: `billed`, sampled or `unsampled`).
    Those another run handled only in an object holding sampled rows: in an object found by
    the search, no sample says Stripe refused them again; they are an earlier report's (an
    earlier report's 10 rows of ctl.csv made a report that found 3 of its 10 `remediated`,
    its 7 other rows lost without a warning)."""
    billed = len(job.earlier.get(key, set()) - scope.handled)
    job.resent += selection.resent
    job.left += selection.left - billed
    job.billed += billed + unsampled
    handled = selection.handled if linked else 0
    return selected + handled + selection.left + unsampled
