"""The runs over the rows of one bucket object, whichever way Stripe named them.

Stripe's S3 connector may name one refused row twice: in an import set's failed-records file
(a format problem) and in a meter error report about other rows of the object (a data problem
our validation finds first). The report's run has the object's key for source; the import
set's run has the failed-records file (the import set's `source_object` names the key). Each
run leaves out the rows any other run over the object corrected or quarantined: both would
write `<id>-mfx<n>`, and two corrected objects imported more than a day apart bill the row
twice (Stripe dedupes identifiers for 24 hours only); its quarantine would be doubled too.

An import set that names no object is linked to none: its rows are matched with no other
run's (by identifier alone, a row of another object that reuses the identifier a day later,
as Stripe allows, would be left out and never billed).

A row a run over the object quarantined that a later import set's failed records name again
(or a later version that failed whole holds) is a new refusal (`HandledElsewhere`,
`refused`). Neither run sends a row another version of the object took (`TakenBefore`).
Which runs came earlier is told by the time their rows were quarantined, and for the runs
of import sets and error reports by Stripe's own times (`runs_refused_before`): a worker's
backlog may run an earlier import set's run after the later import set's event, and a
late-delivered older import set is no later one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine

from remediation.ports import Bucket
from service.errors import StripeFileError, TaskInputMissing
from service.jobs.inputs import JobDeps, download, event_time, identifiers_in
from service.jobs.store import reports
from service.jobs.store.lineage import (
    corrected_among,
    handled_among,
    runs_correcting,
    runs_of_sources,
)
from service.jobs.store.runs import (
    failed_file_run_key,
    finished_run,
    import_set_of,
    report_of,
    run_keys,
)
from service.jobs.store.taken_again import (
    mark_refused_again,
    mark_taken_again,
    marked_among,
    quarantine_times,
)
from service.logs import log_event
from service.models import ImportSet, RemediationRun


def object_sources(engine: Engine, bucket: Bucket, key: str | None) -> list[str]:
    """The sources of the runs over the rows of the object `key`: its names, and the
    failed-records files (and copies of files that failed whole) of the import sets that
    name it (`reports.object_sources`)."""
    return reports.object_sources(engine, bucket.prefix, key)


class LeftOut:
    """Rows a run leaves out: those whose identifier `excluded` names (`left`: how many),
    asked a chunk of a batch's identifiers at a time (`remediation.ports.LeavesOut`)."""

    left = 0

    def excluded(self, identifiers: set[str]) -> set[str]:
        raise NotImplementedError

    def said(self, event: str, what: str, **fields: object) -> str:
        """`; <left> <what>` for a task's outcome, logged as `event` (nothing when none)."""
        if not self.left:
            return ""
        log_event(event, level=logging.WARNING, rows=self.left, **fields)
        return f"; {self.left} {what}"

    def count_left(self, rows: int) -> None:
        self.left += rows


def runs_refused_before(engine: Engine, run_ids: list[int], moment: datetime) -> set[int]:
    """Those of these runs that took rows Stripe refused before `moment` (an import set's
    event), so from an earlier version of the object: the runs of an import set (its failed
    records, or its failed file) whose event came before, and of an error report whose window
    ended before (whole seconds: one of the same second is not taken for earlier)."""
    before = int(moment.timestamp())
    return {r for r, when in refusal_moments(engine, run_ids).items() if when < before}


def refusal_moments(engine: Engine, run_ids: list[int]) -> dict[int, int]:
    """run id -> when Stripe refused the rows the run took (whole seconds), for the runs of an
    import set (its event) and of an error report (the end of its window); other runs (the
    poller's, re-runs) are left out: their time is their own."""
    keys = run_keys(engine, run_ids)
    impsets = {r: i for r, k in keys.items() if (i := import_set_of(k)) is not None}
    events = {r: e for r, k in keys.items() if (e := report_of(k)) is not None}
    found = reports.import_sets(engine, sorted(set(impsets.values())))
    taken = {row.import_set_id: event_time(row) for row in found}
    ended = reports.report_ends(engine, sorted(set(events.values())))
    moments = {r: when for r, i in impsets.items() if (when := taken.get(i)) is not None}
    moments |= {r: int(end.timestamp()) for r, e in events.items() if (end := ended.get(e))}
    return moments


class RefusedAgain(NamedTuple):
    """Stripe refused the rows again at `at`, from the object version `version` (a label)."""

    at: datetime
    version: str


class HandledElsewhere(LeftOut):
    """The rows without those another run over the same object corrected or quarantined
    (`left`: how many), looked up a batch at a time (no query at all when no other run took
    rows of the object: the common case).

    `refused`: the rows are Stripe's refusals of a version of the object (an import set's
    failed records). A row a run over the object quarantined before then, which Stripe now
    refused again, was taken again by the connector (it takes every version whole): a new
    refusal, not one handled. It is marked taken again (`again`: how many), as the poller does
    when it indexes the version (which, with MFX_POLLER=off or before it got to the version,
    it had not: the row was left out as handled, held with the old version's content, and the
    quarantine re-run then left it as billed since: never billed)."""

    def __init__(
        self,
        engine: Engine,
        bucket: Bucket,
        key: str | None,
        run_key: str,
        refused: RefusedAgain | None = None,
    ) -> None:
        self.engine, self.key, self.refused, self.again = engine, key, refused, 0
        sources = object_sources(engine, bucket, key)
        self.runs = runs_of_sources(engine, sources, run_key)
        # the re-runs that took their quarantined rows too (quarantined again there)
        self.chain = runs_correcting(engine, sources) if self.runs and refused else []
        self.earlier = set()
        if self.chain and refused is not None:
            self.earlier = runs_refused_before(engine, self.runs, refused.at)

    def excluded(self, identifiers: set[str]) -> set[str]:
        if not self.runs:  # no other run took rows of the object: nothing to look up
            return set()
        listed = sorted(identifiers)
        again: set[str] = set()
        if self.refused is not None and self.chain:
            at, version = self.refused
            mark_refused_again(self.engine, self.chain, listed, version, at, self.earlier)
            # counted by what is marked, not by what this try marked: a task retried after
            # a crash (its first try marked them) says the same
            again = marked_among(self.engine, self.chain, listed)
        excluded = handled_among(self.engine, self.runs, listed)
        self.again += len(again - excluded)
        return excluded

    def outcome(self) -> str:
        again = (
            f"; {self.again} quarantined before refused again (marked taken again): "
            "remediated from this version"
            if self.again
            else ""
        )
        what = f"left out: another run over {self.key} corrected or quarantined them"
        return again + self.said("remediation.rows_handled_elsewhere", what, key=self.key)


def _taken(
    deps: JobDeps,
    import_set: ImportSet,
    repair: RemediationRun | None,
    folder: Path,
    wanted: set[str],
) -> set[str]:
    """Those of `wanted` Stripe's copy of the import set's file holds, but those Stripe
    refused (its failed records) or, of a file that failed whole, those its `repair`
    quarantined."""
    copy = _stripe_file(deps, import_set, str(import_set.source_file_id), folder)
    rows = identifiers_in(copy, deps.run.rules) & wanted
    if not rows:
        return rows
    if repair is not None and repair.id is not None:
        held = quarantine_times(deps.run.engine, [repair.id], sorted(rows))
        return rows - {identifier for identifier, _, _ in held}
    if not import_set.errors_file_id:
        return rows
    failed = _stripe_file(deps, import_set, import_set.errors_file_id, folder / "refused")
    return rows - identifiers_in(failed, deps.run.rules)


def _stripe_file(deps: JobDeps, import_set: ImportSet, file_id: str, folder: Path) -> Path:
    """A file Stripe kept of another version's import set (its copy of the file, its failed
    records), downloaded into `folder`. One Stripe no longer gives (404) stops the task."""
    folder.mkdir(parents=True)
    try:
        return download(deps.files, file_id, folder)
    except StripeFileError as exc:
        if exc.status != 404:
            raise  # retried
        raise TaskInputMissing(
            f"Stripe no longer gives its file {file_id} of the version of "
            f"{import_set.source_object} import set {import_set.import_set_id} took: which "
            "rows that version took (billed) cannot be told, and re-sent they would be billed "
            "twice; remediate these rows with `meterfix remediate`, leaving out the rows "
            "billed before"
        ) from exc


def version_label(import_set: ImportSet, what: str) -> str:
    """How a quarantined row is marked that the version of its object this import set took
    took since (`what`: "taken"), or refused again ("refused again")."""
    at = datetime.fromtimestamp(event_time(import_set), UTC)
    return (
        f"{import_set.source_object} (import set {import_set.import_set_id}, {what} "
        f"{at:%Y-%m-%d %H:%M} UTC)"
    )


class TakenBefore(LeftOut):
    """The rows Stripe's connector refused in a version of an object (its failed records, or
    a file that failed whole), without those another version of the object took (`left`:
    how many). The connector takes every version whole: a row the day's file held in a
    version it imported was billed then (or deduped, within a day); refused in this version
    (a day later, say, its meter archived since), it is no usage left unbilled, and corrected
    it is billed twice. Taken: the rows of Stripe's copy of each other version it imported,
    but those its failed-records file names, and of each other version it failed whole whose
    repair ran, but those that repair quarantined; and not refused since by an error report
    (its window ended after that version's event: the event Stripe created from the row was
    refused, not billed; `refusal_moments`). A refusal in another version's failed records
    says nothing of the version that took the row. A version whose copy Stripe no longer
    gives stops the task (`TaskInputMissing`): sent without knowing, its rows may be billed
    twice. `source`: the file of the rows (read for their identifiers only when the object
    has other versions)."""

    def __init__(
        self, deps: JobDeps, import_set: ImportSet, source: Path, folder: Path, run_key: str
    ) -> None:
        engine = deps.run.engine
        self.engine = engine
        names = reports.object_names(deps.run.bucket.prefix, import_set.source_object)
        others = [
            other
            for other in reports.import_sets_of_object(engine, names)
            if other.import_set_id != import_set.import_set_id
            and other.origin != reports.POLLER_ORIGIN
            and other.source_file_id
        ]
        wanted = identifiers_in(source, deps.run.rules) if others else set()
        # identifier -> when a version took it last (its import set's event), and a label
        self.taken: dict[str, tuple[int, str]] = {}
        for n, other in enumerate(others):
            repair = None
            if other.status == reports.FAILED:
                repair = finished_run(engine, failed_file_run_key(other.import_set_id))
                if repair is None or repair.id is None:
                    continue  # none of its rows was sent yet
            took = (event_time(other), version_label(other, "taken"))
            for identifier in _taken(deps, other, repair, folder / f"version-{n}", wanted):
                self.taken[identifier] = max(took, self.taken.get(identifier, took))
        self.runs: list[int] = []
        self.reports: dict[int, int] = {}
        if self.taken:
            sources = object_sources(engine, deps.run.bucket, import_set.source_object)
            runs = runs_correcting(engine, sources)
            keys = run_keys(engine, runs)
            self.runs = [r for r in runs if keys.get(r) != run_key]
            # the error reports' runs: when their window ended
            reported = [r for r in self.runs if report_of(keys.get(r, "")) is not None]
            self.reports = refusal_moments(engine, reported)

    def excluded(self, identifiers: set[str]) -> set[str]:
        listed = sorted(i for i in identifiers if i in self.taken)
        if not listed:
            return set()
        reported: dict[str, int] = {}
        for identifier, run_id, _ in quarantine_times(self.engine, list(self.reports), listed):
            when = self.reports[run_id]
            reported[identifier] = max(when, reported.get(identifier, when))
        # a row a run corrected is another run's (`HandledElsewhere`: left out, its
        # correction billed); one reported in the same second as taken counts as after
        corrected = corrected_among(self.engine, self.runs, listed)
        left = {i for i in listed if i not in corrected and self.taken[i][0] > reported.get(i, -1)}
        # the entries of them quarantined before a version took them: billed from it (the
        # customer fixed them by hand), no longer waiting for a fix
        by_version: dict[tuple[int, str], list[str]] = {}
        for identifier in sorted(left):
            by_version.setdefault(self.taken[identifier], []).append(identifier)
        for (when, label), identifiers_of in by_version.items():
            at = datetime.fromtimestamp(when, UTC)
            mark_taken_again(self.engine, self.runs, identifiers_of, label, at)
        return left

    def outcome(self) -> str:
        what = "left out: Stripe's connector took them from another version of the file"
        return self.said("remediation.rows_taken_before", what)


__all__ = [
    "HandledElsewhere",
    "LeftOut",
    "RefusedAgain",
    "TakenBefore",
    "object_sources",
    "refusal_moments",
    "runs_refused_before",
    "version_label",
]
