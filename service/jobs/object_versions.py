"""The rows another version of a bucket object took (`TakenBefore`): Stripe's connector
takes every version whole, so a row it refused in one version is left out when another took it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from service.errors import StripeFileError, TaskInputMissing
from service.jobs.inputs import JobDeps, download, event_time, identifiers_in
from service.jobs.object_runs import LeftOut, object_sources, refusal_moments
from service.jobs.store import reports
from service.jobs.store.lineage import corrected_among, runs_correcting
from service.jobs.store.runs import failed_file_run_key, finished_run, report_of, run_keys
from service.jobs.store.taken_again import mark_taken_again, quarantine_times
from service.models import ImportSet, RemediationRun
from service.notify.runs import RunAlertsToSettle


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
        self.engine = deps.run.engine
        self.settling = RunAlertsToSettle()  # the runs whose rows `excluded` marks
        others = _other_versions(deps, import_set)
        wanted = identifiers_in(source, deps.run.rules) if others else set()
        # identifier -> when a version took it last (its import set's event), and a label
        self.taken: dict[str, tuple[int, str]] = _taken_by_versions(deps, others, folder, wanted)
        self.runs: list[int] = []
        self.reports: dict[int, int] = {}
        if self.taken:
            self.runs, self.reports = _other_runs(deps, import_set, run_key)

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
            note = self.settling.note  # their runs' alerts told once the run read the file
            mark_taken_again(self.engine, self.runs, identifiers_of, label, at, note)
        return left

    def outcome(self) -> str:
        """What the task says of the rows (the run has read them all); first the alerts of
        the runs whose rows `excluded` marked are told, once (not once a chunk)."""
        self.settling.settle(self.engine)
        what = "left out: Stripe's connector took them from another version of the file"
        return self.said("remediation.rows_taken_before", what)


def _other_versions(deps: JobDeps, import_set: ImportSet) -> list[ImportSet]:
    """The import sets Stripe's connector made of the object's other versions, with the copy
    of the file it took (`TakenBefore`)."""
    names = reports.object_names(deps.run.bucket.prefix, import_set.source_object)
    return [
        other
        for other in reports.import_sets_of_object(deps.run.engine, names)
        if other.import_set_id != import_set.import_set_id
        and other.origin != reports.POLLER_ORIGIN
        and other.source_file_id
    ]


def _taken_by_versions(
    deps: JobDeps, others: list[ImportSet], folder: Path, wanted: set[str]
) -> dict[str, tuple[int, str]]:
    """Those of `wanted` the versions of `others` took: identifier -> when a version took it
    last (its import set's event), and a label."""
    taken: dict[str, tuple[int, str]] = {}
    for n, other in enumerate(others):
        repair = None
        if other.status == reports.FAILED:
            repair = finished_run(deps.run.engine, failed_file_run_key(other.import_set_id))
            if repair is None or repair.id is None:
                continue  # none of its rows was sent yet
        took = (event_time(other), version_label(other, "taken"))
        for identifier in _taken(deps, other, repair, folder / f"version-{n}", wanted):
            taken[identifier] = max(took, taken.get(identifier, took))
    return taken


def _other_runs(
    deps: JobDeps, import_set: ImportSet, run_key: str
) -> tuple[list[int], dict[int, int]]:
    """The runs over the object (and the re-runs that took their rows) but this task's
    (`run_key`), and of the error reports' runs among them when their window ended."""
    engine = deps.run.engine
    sources = object_sources(engine, deps.run.bucket, import_set.source_object)
    runs = runs_correcting(engine, sources)
    keys = run_keys(engine, runs)
    others = [r for r in runs if keys.get(r) != run_key]
    # the error reports' runs: when their window ended
    reported = [r for r in others if report_of(keys.get(r, "")) is not None]
    return others, refusal_moments(engine, reported)


__all__ = ["TakenBefore", "version_label"]
