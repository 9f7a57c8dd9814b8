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
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from sqlalchemy import Engine

from remediation.core.leftout import without
from remediation.core.sameids import TakenElsewhere
from remediation.engine import batches
from remediation.errors import UnreadableFile
from remediation.records import UsageRecord
from remediation.repair import InputPlan, read_repaired
from remediation.reported import (
    ReportScope,
    Selection,
    Taken,
    refused_under,
    sampled_in,
    taken_under,
)
from remediation.rowdigest import text_digests
from remediation.rownames import RowNames
from remediation.validation import MeterIndex
from service.adapters.bucket import object_tag
from service.errors import TaskInputMissing
from service.jobs.input_lineage import run_lineage, source_lineage
from service.jobs.inputs import JobDeps
from service.jobs.object_runs import object_sources, one_run_an_object
from service.jobs.report_job import Report, TakenLongBefore
from service.jobs.report_objects import fetch, linked_objects, other_objects, recorded_now
from service.jobs.report_outcome import conclude
from service.jobs.report_rows import HeldFirst, Reported, among
from service.jobs.report_versions import SentSince, when_taken
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.runs import execute_run, run_done
from service.jobs.stages import Stage, Stages
from service.jobs.store.lineage import handled_identifiers, handled_under, runs_correcting
from service.jobs.store.report_records import load_report, set_report_status
from service.jobs.store.runs import finished_run, report_run_key
from service.jobs.store.taken_again import quarantine_times
from service.models import (
    ErrorReport,
    ErrorReportStatus,
    ErrorSample,
    RunTrigger,
)
from service.models._types import as_utc, utcnow
from service.poller.store import FirstVersion, event_names_of, first_versions, row_numbers


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
        files = _linked_files(ctx, job, linked, firsts, Path(tmp))
        others = other_objects(ctx.engine, report, job, set(linked))
        job.objects = set(linked) | {key for key, _ in others}
        found = _remediate_linked(ctx, job, files)
        found = _remediate_others(ctx, job, others, Path(tmp), found)
    outcome = conclude(ctx.engine, job, found)
    return outcome, job.unrecorded if found < job.expected else []


class _Linked(NamedTuple):
    """A linked object read before any run: the ETag it was imported at, its copy, its
    sampled rows (but those changed since sent: `altered`)."""

    etag: str
    fetched: tuple[str, Path, InputPlan]
    records: list[UsageRecord]
    altered: dict[str, bool]
    since: SentSince


def _linked_files(
    ctx: RunContext,
    job: Report,
    linked: dict[str, str],
    firsts: dict[str, FirstVersion],
    folder: Path,
) -> dict[str, tuple[str, Path, InputPlan]]:
    """key -> (ETag, local copy, plan) of the linked objects whose sampled rows the report is
    about; what each sample says is kept on `job` (those of another file now: `job.changed`),
    the rows under a sampled identifier counted over every one of them (`sampled_in`)."""
    read: dict[str, _Linked] = {}
    for key, etag in linked.items():
        fetched = fetch(ctx, job, key, etag, folder, or_current=True)
        if fetched is None:
            continue
        altered: dict[str, bool] = {}
        since = SentSince(ctx, job, firsts, key, fetched[0])
        records = _sampled(ctx, job, key, fetched, since, altered)
        if records is not None:
            read[key] = _Linked(etag, fetched, records, altered, since)
    said = sampled_in({key: one.records for key, one in read.items()}, job.scope, job.index)
    files: dict[str, tuple[str, Path, InputPlan]] = {}
    for key, one in read.items():
        sampled = said[key]
        if one.fetched[0] != one.etag and not sampled.codes and not one.altered:
            job.changed.append(key)  # another file now
            continue
        files[key] = one.fetched
        job.customers |= sampled.customers
        job.sampled[key] = sampled
        job.altered[key] = one.altered
        job.earlier[key] = one.since.earlier
    _taken_from(ctx, job, {key: read[key] for key in files}, sorted(linked))
    return files


def _taken_from(ctx: RunContext, job: Report, read: dict[str, _Linked], linked: list[str]) -> None:
    """Note in `job.took` the objects holding a row Stripe took under a sampled identifier
    other rows hold too (`reported.taken_under`): a refused row of another object under it is
    quarantined (`_taken_elsewhere`), not sent as `<id>-mfx1` (billed twice). A row another
    run corrected or quarantined is not one Stripe took (a quarantined one was said to be, its
    identifier taken for billed): it is the first under its identifier wherever it stands
    (`_handled_first`), so a refused row of another object under it is held (it went out as
    `<id>-mfx1`, or a re-run sends it so: a second is a duplicate or billed twice). Nor is a
    row our validation proves Stripe refused (`_refused_first`)."""
    handled = _handled_first(ctx, job, read, linked)
    refused: dict[str, dict[str, int]] = {}
    for key in sorted(read):
        shared = frozenset(job.sampled[key].shared)
        if not shared:
            continue
        records = [r for r in read[key].records if (r.identifier or "") not in handled[key]]
        base = job.scope
        scope = ReportScope(base.codes, base.samples, base.event_name, shared=shared)
        taken = when_taken(ctx.engine, job, key, read[key].fetched[0], linked=True)
        for identifier in taken_under(records, scope, job.index, taken, job.customers):
            job.took.setdefault(identifier, []).append(key)
        refused[key] = refused_under(records, scope, job.index, taken, job.customers)
    for key in sorted(refused):  # an identifier Stripe took from a row is not such a one's
        _refused_first(ctx, job, key, {i: n for i, n in refused[key].items() if i not in job.took})


def _refused_first(ctx: RunContext, job: Report, key: str, refused: dict[str, int]) -> None:
    """Note in `job.first` the object's rows Stripe refused for a problem the report does not
    count that no run took up yet (`reported.refused_under`): its own run corrects or
    quarantines such a row, so a refused row of another object under its identifier is held
    (under `<id>-mfx1` the two clash). Not one a run quarantined: held under
    `identifier_taken` it is never sent; marked taken again (day.csv's `k1` quarantined, its
    usage sent again from day2.csv) re-runs leave it, so the row sent again goes out, or the
    usage is never billed."""
    if not refused:
        return
    runs = runs_correcting(ctx.engine, object_sources(ctx.engine, ctx.bucket, key))
    entries = {entry[0] for entry in quarantine_times(ctx.engine, runs, sorted(refused))}
    for identifier, row in sorted(refused.items(), key=lambda item: item[1]):
        if identifier not in entries and identifier not in job.first:
            job.first[identifier] = (key, row)
            job.refused_first.add(identifier)


def _handled_first(
    ctx: RunContext, job: Report, read: dict[str, _Linked], linked: list[str]
) -> dict[str, set[str]]:
    """key -> the sampled identifiers of the object's rows another run (not the report's own,
    as `_remediate` asks) corrected or quarantined, for every object the poller recorded one
    in (`linked`), read or not. Each is noted the first under it in `job.first`, in key
    order, whether or not a row the task reads holds it now (`Selection.first`): it went out
    as `<id>-mfx1`, or a re-run sends it so, and a refused row under it is held. Asked only
    of the objects read, for identifiers they shared, day2.csv's k1 corrected and then
    deleted (or rewritten without it) was passed over: day.csv's went out as k1-mfx1 again.
    A row the report's own run over an object took (done: a crashed try is done again) is
    noted too, as that run's (not in `job.handled_first`): passed over, a retry reading an
    object recorded since that sorts earlier sent that object's row as `<id>-mfx1` again."""
    sampled = set(job.scope.samples)
    handled: dict[str, set[str]] = {}
    for key in linked:
        records = read[key].records if key in read else []
        held = row_numbers(ctx.engine, key, sampled)
        asked = sorted(set(held) | {r.identifier or "" for r in records} & sampled)
        sources = object_sources(ctx.engine, ctx.bucket, key)
        run_key = report_run_key(job.event_id, key)
        handled[key] = handled_under(ctx.engine, sources, asked, other_than=run_key)
        ours: set[str] = set()
        if asked and finished_run(ctx.engine, run_key) is not None:
            ours = handled_under(ctx.engine, sources, asked) - handled[key]
        for identifier, row in _first_rows(records, held, handled[key] | ours):
            noted = job.first.setdefault(identifier, (key, row)) == (key, row)
            if noted and identifier in handled[key]:
                job.handled_first.add(identifier)
    return handled


def _first_rows(
    records: list[UsageRecord], held: dict[str, int], identifiers: set[str]
) -> list[tuple[str, int]]:
    """(identifier, row) of `identifiers`, by row: the object's first row read holding it, or,
    none holding it now, the row the poller recorded it at (`held`)."""
    rows: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r.row_number):
        identifier = record.identifier or ""
        if identifier in identifiers:
            rows.setdefault(identifier, record.row_number)
    for identifier in identifiers - set(rows):
        rows[identifier] = held[identifier]
    return sorted(rows.items(), key=lambda item: (item[1], item[0]))


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


def _remediate_linked(
    ctx: RunContext, job: Report, files: dict[str, tuple[str, Path, InputPlan]]
) -> int:
    """Remediate the linked objects' rows, by key; how many rows the report is about they hold."""
    found = 0
    for key in sorted(files):
        version, path, plan = files[key]
        taken = when_taken(ctx.engine, job, key, version, linked=True)
        found += _remediate(ctx, job, key, version, path, plan, taken, linked=True)
    return found


def _remediate_others(
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


def _sampled(
    ctx: RunContext,
    job: Report,
    key: str,
    fetched: tuple[str, Path, InputPlan],
    since: SentSince,
    altered: dict[str, bool],
) -> list[UsageRecord] | None:
    """The sampled rows of the object but those changed since sent (noted in `altered`), or
    None when it cannot be read past a point (`job.unreadable` says why): read whole before
    any run, so the other objects' rows are remediated."""
    version, path, plan = fetched
    records: list[UsageRecord] = []
    try:
        with path.open("rb") as stream:
            names = RowNames(key, version)
            for batch in batches(read_repaired(stream, plan, ctx.rules)):
                named = names.batch(batch)
                records += named.take(among(named, job.scope.samples)).records()
        return list(since.unchanged(iter(records), altered))
    except UnreadableFile as exc:
        job.unreadable[key] = exc.reason
        return None


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
