"""The objects holding an error report's sampled rows, read before any of its runs.

Each is read whole for its sampled rows, but those changed since sent (`linked_files`). Then
which row goes first under an identifier rows of several objects share is noted on the task's
state (`Report.took`, `Report.first`): one Stripe took, one another run corrected or
quarantined, one our validation proves Stripe refused. A refused row of another object under
it is held, not sent as `<id>-mfx1` (billed twice). The runs over the objects read these
(`report_runs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from remediation.engine import batches
from remediation.errors import UnreadableFile
from remediation.records import UsageRecord
from remediation.repair import InputPlan, read_repaired
from remediation.reported import ReportScope, refused_under, sampled_in, taken_under
from remediation.rownames import RowNames
from service.jobs.object_runs import object_sources
from service.jobs.report_job import Report
from service.jobs.report_objects import fetch
from service.jobs.report_rows import among
from service.jobs.report_versions import SentSince, when_taken
from service.jobs.run_context import RunContext
from service.jobs.store.lineage import handled_under, runs_correcting
from service.jobs.store.runs import finished_run, report_run_key
from service.jobs.store.taken_again import quarantine_times
from service.poller.store import FirstVersion, row_numbers


class _Linked(NamedTuple):
    """A linked object read before any run: the ETag it was imported at, its copy, its
    sampled rows (but those changed since sent: `altered`)."""

    etag: str
    fetched: tuple[str, Path, InputPlan]
    records: list[UsageRecord]
    altered: dict[str, bool]
    since: SentSince


def linked_files(
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
    quarantined (`report_runs._taken_elsewhere`), not sent as `<id>-mfx1` (billed twice). A
    row another run corrected or quarantined is not one Stripe took (a quarantined one was
    said to be, its identifier taken for billed): it is the first under its identifier
    wherever it stands (`_handled_first`), so a refused row of another object under it is held
    (it went out as `<id>-mfx1`, or a re-run sends it so: a second is a duplicate or billed
    twice). Nor is a row our validation proves Stripe refused (`_refused_first`)."""
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
    as `report_runs._remediate` asks) corrected or quarantined, for every object the poller
    recorded one in (`linked`), read or not. Each is noted the first under it in `job.first`, in key
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
