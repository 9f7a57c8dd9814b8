"""Remediate the rows a meter error report is about, when we imported them ourselves.

Samples were linked to (object, row) when the report was stored (the poller records
identifier -> object in `imported_rows`, in import and index mode). Every linked object is
read again and every row of the reported event names failing with a reported code is
remediated (see remediation.reported), one run per (report, object). Stripe samples only a
few rows: when the rows found fall short of the report's error count, the other objects we
saw around the report's window holding rows of those event names are searched too; if the
count is still not reached the report is marked `partial` and an alert says so.

Rows another run over the same object already handled (corrected or quarantined: the same
identifier, wherever the object holds it now) are skipped and counted as found, so no row is
sent twice; a row without an identifier has one made of its object's version, so none of a
new version is taken for one of the old. Only rows Stripe refused
whenever it took them are selected (remediation.reported, `_taken`). A report with no
linked rows is kept as it is, with its samples (`unmatched`: its meter's warning says so, and
a poll pass that records its rows within a day takes it up, `poller.handover`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from remediation.codes import ErrorCode
from remediation.core.checks import problem_ids
from remediation.core.columns import Batch, Column
from remediation.core.leftout import without
from remediation.engine import batches
from remediation.errors import UnreadableFile
from remediation.poller import RowNames, source_tag
from remediation.records import UsageRecord
from remediation.repair import InputPlan, plan_input, read_repaired
from remediation.reported import (
    ReportScope,
    Sampled,
    Selection,
    Taken,
    reported_code,
    sampled_rows,
    select_reported,
)
from remediation.rowdigest import record_digests
from remediation.validation import MeterIndex
from service.adapters.bucket import object_tag
from service.config import PollerMode
from service.errors import TaskInputMissing
from service.jobs.inputs import JobDeps, local_name, next_generation, run_lineage
from service.jobs.object_runs import object_sources
from service.jobs.runs import RunContext, RunRequest, execute_run
from service.jobs.stages import Stage, Stages
from service.jobs.store.lineage import handled_identifiers, runs_correcting
from service.jobs.store.quarantine import marked_among
from service.jobs.store.reports import PARTIAL_ALERT, load_report, set_report_status
from service.jobs.store.runs import finished_run, report_run_key
from service.models import (
    ErrorReport,
    ErrorReportStatus,
    ErrorSample,
    RunTrigger,
)
from service.models._types import as_utc, utcnow
from service.notify.alerts import raise_alert, resolve_alert
from service.poller.store import (
    FirstVersion,
    ObjectTimes,
    event_names_of,
    first_versions,
    object_times,
    objects_holding,
    objects_seen_between,
    recordable,
)

# Objects whose rows a report may be about: first seen up to a day before the report's window
# (Stripe imports and validates later) and up to an hour after it (in index mode meterfix may
# list an object after Stripe's connector took it).
WINDOW_BEFORE = timedelta(days=1)
WINDOW_AFTER = timedelta(hours=1)
# An object found by that search holds no sampled row, and the poller sends an object's rows
# batch by batch: Stripe may have taken such rows at another time than the report's. The
# latest it took them: a day after the search's window (its connector or queue may come to an
# object it listed late), or a day after the poller's first send of the object (it sends
# nothing past 23 h). A timestamp of them counts as in the future only past that (so, whenever
# Stripe took the row, it refused it: milliseconds always are), never one it billed. Bounds
# from the report and the database only: a task retried later selects the same rows.
TAKEN_LATEST_MARGIN = timedelta(days=1)


@dataclass
class _Report:
    event_id: str
    scope: ReportScope
    expected: int  # errors the report counted
    event_names: set[str]
    now: int  # the end of the report's window: every row it counts was taken by then
    start: int | None  # its start: every row it counts was taken since
    index: MeterIndex
    long_before: _TakenLongBefore  # versions Stripe's connector took long before the window
    customers: set[str] = field(default_factory=set)
    sampled: dict[str, Sampled] = field(default_factory=dict)  # key -> what its samples say
    changed: list[str] = field(default_factory=list)  # objects overwritten since Stripe took them
    gone: list[str] = field(default_factory=list)  # objects deleted since Stripe took them
    # key -> why the version there now cannot be read (written again empty, no usage file)
    unreadable: dict[str, str] = field(default_factory=dict)
    # of `changed`: overwritten by a version the poller had not recorded yet (it may hold the
    # rows: the report is taken up again when the poller records it)
    unrecorded: list[str] = field(default_factory=list)
    # key -> its sampled rows that are not the rows Stripe refused (`ReportScope.changed`)
    altered: dict[str, dict[str, bool]] = field(default_factory=dict)
    # key -> those of them first held by a version uploaded long before the report (`_SentSince`)
    earlier: dict[str, set[str]] = field(default_factory=dict)
    resent: int = 0  # changed rows sent as they are now
    left: int = 0  # rows left to Stripe's connector (taken again from a later version)
    billed: int = 0  # rows left out: taken from a version long before the report's window
    # every object the report may run over (linked or found around its window): an object
    # sharing its folder and stem with another gets a folder of its own (`object_tag`)
    objects: set[str] = field(default_factory=set)


def remediate_error_report(deps: JobDeps, event_id: str) -> str:
    ctx = deps.run
    report, samples, counts = _load(ctx.engine, event_id)
    linked = _linked_objects(ctx.engine, samples)
    if not linked:
        set_report_status(ctx.engine, event_id, ErrorReportStatus.UNMATCHED)
        return "no rows of ours: kept unmatched with its samples"
    job = _job(ctx, report, samples, counts)
    firsts = first_versions(ctx.engine, set(job.scope.samples))
    with tempfile.TemporaryDirectory(prefix="meterfix-obj-") as tmp:
        files: dict[str, tuple[str, Path, InputPlan]] = {}
        for key, etag in linked.items():
            fetched = _fetch(ctx, job, key, etag, Path(tmp), or_current=True)
            if fetched is None:
                continue
            version, path, plan = fetched
            altered: dict[str, bool] = {}
            since = _SentSince(ctx, job, firsts, key, version)
            sampled = _sampled(ctx, job, key, fetched, since, altered)
            if sampled is None:
                continue
            if version != etag and not sampled.codes and not altered:  # another file now
                job.changed.append(key)
                continue
            files[key] = fetched
            job.customers |= sampled.customers
            job.sampled[key] = sampled
            job.altered[key] = altered
            job.earlier[key] = since.earlier
        others = _other_objects(ctx.engine, report, job, set(linked))
        job.objects = set(linked) | {key for key, _ in others}
        found = 0
        for key in sorted(files):
            version, path, plan = files[key]
            taken = _taken(ctx.engine, job, key, version, linked=True)
            found += _remediate(ctx, job, key, version, path, plan, taken)
        for key, etag in others:
            if found >= job.expected:
                break
            fetched = _fetch(ctx, job, key, etag, Path(tmp))
            if fetched is not None:
                taken = _taken(ctx.engine, job, key, etag, linked=False)
                found += _remediate(ctx, job, key, *fetched, taken)
    return _conclude(ctx.engine, job, found)


def _sampled(
    ctx: RunContext,
    job: _Report,
    key: str,
    fetched: tuple[str, Path, InputPlan],
    since: _SentSince,
    altered: dict[str, bool],
) -> Sampled | None:
    """What the sampled rows of the object say (`sampled_rows`), or None when it cannot be
    read past a point (`job.unreadable` says why): read whole before any run, so the other
    objects' rows are remediated."""
    version, path, plan = fetched
    records: list[UsageRecord] = []
    try:
        with path.open("rb") as stream:
            names = RowNames(key, version)
            for batch in batches(read_repaired(stream, plan, ctx.rules)):
                named = names.batch(batch)
                records += named.take(_among(named, job.scope.samples)).records()
        return sampled_rows(since.unchanged(iter(records), altered), job.scope, job.index)
    except UnreadableFile as exc:
        job.unreadable[key] = exc.reason
        return None


def _job(
    ctx: RunContext, report: ErrorReport, samples: list[ErrorSample], counts: dict[str, int]
) -> _Report:
    meter_name = _event_name(ctx, report.meter_id)
    names = _sampled_event_names(ctx.engine, samples) | ({meter_name} if meter_name else set())
    reference = as_utc(report.validation_end) or as_utc(report.created_at) or utcnow()
    start = as_utc(report.validation_start)
    now = int(reference.timestamp())
    begins = None if start is None else int(start.timestamp())
    return _Report(
        event_id=report.event_id,
        scope=ReportScope(
            codes=frozenset(counts) | {s.code for s in samples},
            samples={s.identifier: s.code for s in samples if s.identifier},
            event_name=meter_name,
        ),
        expected=sum(counts.values()) or len(samples),
        event_names=names,
        now=now,
        start=begins,
        index=MeterIndex(
            ctx.meters,
            value_precision=ctx.rules.value_precision,
            limits=ctx.rules.policy.limits,
        ),
        long_before=_TakenLongBefore(ctx, begins if begins is not None else now),
    )


def _fetch(
    ctx: RunContext, job: _Report, key: str, etag: str, folder: Path, *, or_current: bool = False
) -> tuple[str, Path, InputPlan] | None:
    """(ETag, local copy, plan) of the object as Stripe took it, or None when it was
    overwritten since (another ETag): the rows the report is about are gone with that
    version, and the rows there now are another file's, never remediated for this report
    (`job.changed` names it). `or_current`: the version in the bucket now will do if the
    poller listed it too (an identifier is recorded with the first version that held it; the
    caller checks the sampled rows are in it; one the poller has not listed yet is named in
    `job.unrecorded` too)."""
    head = ctx.bucket.head(key)
    if head is None:  # deleted since: its rows are gone, the other objects' are remediated
        job.gone.append(key)
        return None
    if head.etag != etag:
        recorded = object_times(ctx.engine, key, head.etag) is not None
        if not (or_current and recorded):
            job.changed.append(key)
            if or_current:
                job.unrecorded.append(key)
            return None
        etag = head.etag
    path = folder / f"{source_tag(key, etag)}-{local_name(key)}"
    if not path.exists():
        ctx.bucket.download(key, path)
    try:
        return etag, path, plan_input(path, ctx.rules)
    except UnreadableFile as exc:
        # one object that cannot be read (written again empty, say) holds back no other
        # object's rows: they are remediated, and the report is left partial, saying why
        job.unreadable[key] = exc.reason
        return None


def _taken(engine: Engine, job: _Report, key: str, etag: str, *, linked: bool) -> Taken:
    """When Stripe may have taken the object's rows (remediation.reported).

    Stripe's S3 connector takes an object holding sampled rows (`linked`) at once, as one
    import set, within the report's window and after the upload: what its sampled rows say
    holds for its other rows of the meter. The bundled poller sends an object's rows batch by
    batch, from its first send on, maybe hours apart; an object found by the search beyond the
    samples may have been taken at any time after its upload (TAKEN_LATEST_MARGIN)."""
    times = object_times(engine, key, etag) or ObjectTimes(None, None)
    uploaded, first_sent = _seconds(times.uploaded), _seconds(times.first_sent)
    margin = int(TAKEN_LATEST_MARGIN.total_seconds())
    sampled = job.sampled.get(key) if linked else None
    if first_sent is not None:  # the poller sent it (import mode), in row order
        gone_from = sampled.first_row if sampled is not None else {}
        return Taken(max(job.now, first_sent) + margin, first_sent, gone_from=gone_from)
    if not linked:
        latest = job.now + int(WINDOW_AFTER.total_seconds()) + margin
        return Taken(latest=latest, earliest=uploaded)
    known = [bound for bound in (job.start, uploaded) if bound is not None]
    return Taken(
        latest=job.now,
        earliest=max(known) if known else None,
        sampled=frozenset(sampled.codes) if sampled is not None else frozenset(),
        at_once=True,
    )


class _SentSince:
    """Which sampled rows an object version holds that are not the rows Stripe refused.

    Import mode: a customer may fix a row by hand and upload the file again after the
    poller sent it and before Stripe's report about it comes. The poller left the row out of
    the new version (another version sent it); when it changed since it was sent (its digest,
    `remediation.rowdigest`), what the report says of the row Stripe refused (its code, its
    customer) is not said of it: it is taken as it is now. Index mode: Stripe's connector
    takes every version whole; a version uploaded after the report's window holds rows the
    connector took again, changed or not (billed, or refused again and reported again): they
    are left to it (a version uploaded within the window may be the one the report is about).
    So are the rows first held by a version uploaded more than `WINDOW_BEFORE` before the
    report's window (`earlier`): the report is not about that version (no more than it is
    about an object first seen then, `_other_objects`), so it is about a later one that held
    the row again, after Stripe's dedupe of a day; the connector took the row from the first
    version then (billed, or refused and reported then). Re-routed (an archived meter's rows)
    or corrected, it would be billed twice. A row some version sent again since a run
    quarantined it (marked `taken_again`) is neither: the report may be about that send."""

    def __init__(
        self,
        ctx: RunContext,
        job: _Report,
        firsts: Mapping[str, FirstVersion],
        key: str,
        version: str,
    ) -> None:
        self.firsts, self.here = firsts, (key, version)
        self.samples = job.scope.samples
        runs = runs_correcting(ctx.engine, object_sources(ctx.engine, ctx.bucket, key))
        self.again = marked_among(ctx.engine, runs, sorted(job.scope.samples))
        times = object_times(ctx.engine, key, version)
        uploaded = _seconds(times.uploaded) if times is not None else None
        # Stripe's connector takes the bucket's versions (index mode), not the bundled poller
        connector = ctx.settings.mfx_poller != PollerMode.ON
        self.taken_again = connector and uploaded is not None and uploaded > job.now
        self.long_before = job.long_before
        self.earlier: set[str] = set()  # the rows first held long before the report

    def changed(self, record: UsageRecord) -> bool | None:
        """None: the report's row; True: changed since the bundled poller sent it (import
        mode); False: taken again by Stripe's connector from this version (index mode)."""
        identifier = record.identifier or ""
        first = self.firsts.get(identifier) if identifier in self.samples else None
        if first is None or first.version == self.here or identifier in self.again:
            return None
        if not first.sent:
            if self.taken_again:
                return False
            if self.long_before(first):
                self.earlier.add(identifier)
                return False
            return None
        if first.content is None or [first.content] == record_digests([record]):
            return None
        return True

    def unchanged(
        self, records: Iterator[UsageRecord], altered: dict[str, bool]
    ) -> Iterator[UsageRecord]:
        """The records but the changed sampled rows (noted in `altered`)."""
        for record in records:
            changed = self.changed(record)
            if changed is None:
                yield record
            else:
                altered[record.identifier or ""] = changed


class _TakenLongBefore:
    """Whether Stripe's connector took an object version (index mode: it takes one at once,
    when it is uploaded) more than `WINDOW_BEFORE` before the report's window: the report is
    not about that version's rows (no more than about an object first seen then,
    `_other_objects`), but about a later version holding them again, past Stripe's dedupe; the
    connector took the rows from the first version then (billed, or refused and reported
    then). Never for rows the bundled poller sent (import mode: it sends a row once)."""

    def __init__(self, ctx: RunContext, window: int) -> None:
        """`window`: when the report's window starts (or ends, when it has no start)."""
        self.engine = ctx.engine
        self.connector = ctx.settings.mfx_poller != PollerMode.ON
        self.before = window - int(WINDOW_BEFORE.total_seconds())
        self.uploaded: dict[tuple[str, str], int | None] = {}  # version -> when

    def __call__(self, first: FirstVersion) -> bool:
        if not self.connector or first.sent:
            return False
        if first.version not in self.uploaded:
            times = object_times(self.engine, first.key, first.etag)
            self.uploaded[first.version] = _seconds(times.uploaded) if times else None
        uploaded = self.uploaded[first.version]
        return uploaded is not None and uploaded < self.before


def _seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _remediate(
    ctx: RunContext,
    job: _Report,
    key: str,
    etag: str,
    path: Path,
    plan: InputPlan,
    taken: Taken,
) -> int:
    """Remediate the rows of one object the report is about; how many it holds: those this
    run selected and those another run over the object handled (corrected or quarantined)
    before, under the same identifiers, which are not selected again."""
    run_key = report_run_key(job.event_id, key)
    base = job.scope
    # the object's runs, and those of its import sets' failed-records files (the same rows)
    sources = object_sources(ctx.engine, ctx.bucket, key)
    handled = handled_identifiers(ctx.engine, sources, other_than=run_key)
    changed = job.altered.get(key, {})
    scope = ReportScope(base.codes, base.samples, base.event_name, handled, changed)
    selection = Selection()
    held = _HeldFirst(ctx.engine, job, (key, etag), runs_correcting(ctx.engine, sources))
    rows = _Reported(RowNames(key, etag), held, job, scope, taken, selection)
    done = finished_run(ctx.engine, run_key)
    if done is not None:  # a retried task: count what the run found, and the rows handled
        with path.open("rb") as stream:
            for _ in without(batches(read_repaired(stream, plan, ctx.rules)), [rows]):
                pass
        return _counted(job, key, done.input_rows, selection, scope, held.billed)
    stages = Stages()
    with stages.timing(Stage.LINEAGE):
        # above the object's generation, and any that wrote one of its identifiers
        generation, lineage, traced_from = run_lineage(
            ctx.engine, path, ctx.rules, key, next_generation(ctx.bucket, key)
        )
    request = RunRequest(
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
    )
    with path.open("rb") as stream:  # read in columns, the report's rows selected
        run = execute_run(ctx, request, read_repaired(stream, plan, ctx.rules), [rows])
    return _counted(job, key, run.input_rows, selection, scope, held.billed)


def _counted(
    job: _Report, key: str, selected: int, selection: Selection, scope: ReportScope, unsampled: int
) -> int:
    """The rows of one object the report is about, found: those selected, those another run
    handled, and the rows left to Stripe's connector (taken again from a later version, or
    taken from an earlier one long before the report: `billed`, sampled or `unsampled`)."""
    billed = len(job.earlier.get(key, set()) - scope.handled)
    job.resent += selection.resent
    job.left += selection.left - billed
    job.billed += billed + unsampled
    return selected + selection.handled + selection.left + unsampled


class _HeldFirst:
    """The rows of this object version that no earlier version (of this object or another)
    held: a row the poller recorded first with another version (the day's file rewritten
    with the rows so far, a copy under another name) was taken with that one, maybe billed,
    before a customer was deleted or a meter archived. Stripe's S3 connector dedupes it
    within a day and takes it as a new event after; the bundled poller leaves it out. What
    this version's report and times prove says nothing of it: such a row is the report's
    only when Stripe sampled it. Unless the connector took that version long before the
    report (`_TakenLongBefore`): then the report counts the row when the report's code fits it
    (`reported`), as it counts the row of this version Stripe refused, but the row was taken
    from that version (`billed`: counted as found, never sent). Not a row a run over the
    object quarantined, even one a later version sent again since (marked `taken_again`, one
    of `runs`): that version refused it, it was not billed then."""

    def __init__(
        self, engine: Engine, job: _Report, version: tuple[str, str], runs: list[int]
    ) -> None:
        self.engine, self.job, self.version, self.runs = engine, job, version, runs
        self.reported: Callable[[UsageRecord], bool] = lambda _: False
        self.billed = 0

    def kept(self, batch: Batch, identifiers: list[str]) -> npt.NDArray[np.bool_]:
        """Which rows of the batch are kept (`identifiers`: theirs, every row named)."""
        samples, long_before = self.job.scope.samples, self.job.long_before
        first = _first_versions(self.engine, {i for i in identifiers if i and recordable(i)})
        keep = np.ones(len(identifiers), bool)
        maybe: list[int] = []  # taken from a version long before, by the look of them
        for i, identifier in enumerate(identifiers):
            held = first.get(identifier)
            if identifier in samples or held is None or held.version == self.version:
                continue
            keep[i] = False
            if long_before(held):
                maybe.append(i)
        if maybe:
            records = batch.take(np.asarray(maybe, np.int64)).records()
            taken = [
                identifiers[i] for i, r in zip(maybe, records, strict=True) if self.reported(r)
            ]
            refused: set[str] = set()
            for start in range(0, len(taken) if self.runs else 0, LOOKUP_ROWS):
                chunk = taken[start : start + LOOKUP_ROWS]
                refused |= marked_among(self.engine, self.runs, chunk)
            self.billed += sum(1 for identifier in taken if identifier not in refused)
        return keep


# Identifiers looked up at a time (each a query's IN list)
LOOKUP_ROWS = 1000


def _first_versions(engine: Engine, identifiers: set[str]) -> dict[str, FirstVersion]:
    found: dict[str, FirstVersion] = {}
    ordered = sorted(identifiers)
    for start in range(0, len(ordered), LOOKUP_ROWS):
        found |= first_versions(engine, set(ordered[start : start + LOOKUP_ROWS]))
    return found


def _identifiers(batch: Batch) -> list[str]:
    """Each row's identifier as its record holds it ("" for none)."""
    return ["" if v is None else str(v) for v in batch.identifier.values()]


def _among(batch: Batch, samples: Mapping[str, str]) -> npt.NDArray[np.int64]:
    """The rows (indexes) of the batch whose identifier is a sample's."""
    identifiers = _identifiers(batch)
    sampled = np.fromiter((i in samples for i in identifiers), bool, len(identifiers))
    return np.flatnonzero(sampled)


class _Reported:
    """The rows of one object version a report's run takes, a batch at a time as the run
    reads them in columns (`ports.SelectsRows`): every row without an identifier named as the
    poller named it (`RowNames`), the rows no earlier version held (`_HeldFirst`), those the
    report is about (`select_reported`), each with its code. Only the rows that may be the
    report's are made records: the sampled ones, those a check finds a problem with
    (`problem_ids`, against the latest time Stripe took them), those holding a customer
    Stripe did not find. (Selected as records, a run read every row of a day's object as a
    record: 8x slower.)"""

    def __init__(
        self,
        names: RowNames,
        held: _HeldFirst,
        job: _Report,
        scope: ReportScope,
        taken: Taken,
        selection: Selection,
    ) -> None:
        self.names, self.held, self.job = names, held, job
        self.scope, self.taken, self.selection = scope, taken, selection

        def billed(record: UsageRecord) -> bool:
            # not a row another run over the object handled: it may have been refused for
            # another reason (in an import set's failed records), not counted in this report
            if (record.identifier or "") in scope.handled:
                return False
            return reported_code(record, scope, job.index, taken, job.customers) is not None

        held.reported = billed

    def excluded(self, identifiers: set[str]) -> set[str]:
        return set()  # never asked: `selected` is

    def count_left(self, rows: int) -> None:
        pass

    def selected(self, batch: Batch) -> Batch:
        batch = self.names.batch(batch)  # every row: the next rows alike are numbered on
        identifiers = _identifiers(batch)
        at = np.flatnonzero(self.held.kept(batch, identifiers) & self._maybe(batch, identifiers))
        records = batch.take(at).records()
        where = {id(record): i for i, record in zip(at.tolist(), records, strict=True)}
        rows, codes, messages = [], [], []
        job = self.job
        reported = select_reported(
            records, self.scope, job.index, self.taken, job.customers, self.selection
        )
        for record in reported:
            rows.append(where[id(record)])
            codes.append(record.error_code)
            messages.append(record.error_message)
        chosen = batch.take(np.asarray(rows, np.int64))
        return chosen.with_fields(
            code_column=Column(pa.array(codes, pa.string())),
            message_column=Column(pa.array(messages, pa.string())),
        )

    def _maybe(self, batch: Batch, identifiers: list[str]) -> npt.NDArray[np.bool_]:
        """The rows `select_reported` may take or count (the others it passes over): sampled,
        changed since sent (`scope.changed`), failing a check, or holding a customer Stripe
        did not find."""
        samples, changed = self.scope.samples, self.scope.changed
        rows = np.fromiter(
            (i in samples or i in changed for i in identifiers), bool, len(identifiers)
        )
        rows |= problem_ids(batch, self.job.index, self.taken.latest) != 0
        customers = self.job.customers
        if customers and ErrorCode.CUSTOMER_NOT_FOUND in self.scope.codes:
            known = pa.array(sorted(customers), pa.string())
            for column in batch.payload.values():
                found = pc.fill_null(pc.is_in(column.text, value_set=known), False)
                rows |= found.to_numpy(zero_copy_only=False)
        return rows


def _conclude(engine: Engine, job: _Report, found: int) -> str:
    changed = _changed_rows(job)
    alert = f"{PARTIAL_ALERT}:{job.event_id}"
    if found >= job.expected:
        set_report_status(engine, job.event_id, ErrorReportStatus.REMEDIATED)
        resolve_alert(engine, alert)  # taken up again (`poller.handover`), and found now
        return f"remediated {found} row(s) for {job.expected} reported error(s){changed}"
    set_report_status(engine, job.event_id, ErrorReportStatus.PARTIAL, job.unrecorded)
    raise_alert(
        engine,
        key=alert,
        severity="warning",
        kind=PARTIAL_ALERT,
        subject=f"report {job.event_id}: found {found} of {job.expected} reported rows",
        message=_shortfall(job),
        detail={
            "event_id": job.event_id,
            "found": found,
            "expected": job.expected,
            **({"changed": sorted(job.changed)} if job.changed else {}),
        },
    )
    return f"partial: remediated {found} row(s) of {job.expected} reported{changed}"


def _changed_rows(job: _Report) -> str:
    """What became of the sampled rows changed since they were sent, for the outcome."""
    parts = []
    if job.resent:
        parts.append(
            f"{job.resent} changed in the file since sent: taken as they are now, not for the "
            "report's code"
        )
    if job.left:
        parts.append(
            f"{job.left} read from a version uploaded after the report: taken again by "
            "Stripe's connector, left to it"
        )
    if job.billed:
        parts.append(
            f"{job.billed} first held by a version uploaded more than a day before the "
            "report's window: Stripe's connector took them from it then, left out"
        )
    return "".join(f"; {part}" for part in parts)


def _shortfall(job: _Report) -> str:
    message = "the other rows are not in any object meterfix saw around the report's window"
    if job.changed:
        changed = ", ".join(sorted(job.changed))
        message += (
            "; overwritten since Stripe took them (the version the report is about is "
            f"gone): {changed}"
        )
    if job.unrecorded:
        message += (
            "; the poller has not recorded the version there now of "
            f"{', '.join(sorted(job.unrecorded))}: the report is taken up again when it does"
        )
    if job.gone:
        message += (
            f"; deleted from the bucket since Stripe took them: {', '.join(sorted(job.gone))}"
        )
    if job.unreadable:
        unreadable = ", ".join(f"{key} ({why})" for key, why in sorted(job.unreadable.items()))
        message += f"; unreadable since Stripe took them: {unreadable}"
    return message


def _load(engine: Engine, event_id: str) -> tuple[ErrorReport, list[ErrorSample], dict[str, int]]:
    found = load_report(engine, event_id)
    if found is None:
        raise TaskInputMissing(f"error report {event_id} is not recorded")
    return found


def _linked_objects(engine: Engine, samples: list[ErrorSample]) -> dict[str, str]:
    """object key -> the ETag we imported it at, for every sample that is one of our rows."""
    identifiers = {s.identifier for s in samples if s.identifier}
    if not identifiers:
        return {}
    return objects_holding(engine, identifiers)


def _sampled_event_names(engine: Engine, samples: list[ErrorSample]) -> set[str]:
    return event_names_of(engine, {s.identifier for s in samples if s.identifier})


def _other_objects(
    engine: Engine, report: ErrorReport, job: _Report, exclude: set[str]
) -> list[tuple[str, str]]:
    """Objects first seen around the report's window that hold rows of the reported event
    names, newest first."""
    end = as_utc(report.validation_end) or utcnow()
    start = _shifted(as_utc(report.validation_start) or end, -WINDOW_BEFORE)
    rows = objects_seen_between(engine, start, _shifted(end, WINDOW_AFTER), job.event_names)
    return [(key, etag) for key, etag in rows if key not in exclude]


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """`moment + by`, held at the calendar's edge: a window Stripe's API dates in year 1 or
    9999 failed the task with OverflowError on every attempt, the report never concluded."""
    try:
        return moment + by
    except OverflowError:
        return (datetime.max if by > timedelta(0) else datetime.min).replace(tzinfo=UTC)


def _event_name(ctx: RunContext, meter_id: str | None) -> str | None:
    for meter in ctx.meters:
        if meter_id and meter.id == meter_id:
            return meter.event_name
    return None
