"""What each remediation task does: find the rows that failed, then `execute_run` them.

- import_set_errors: the failed-records file of an import set (Stripe Files API, streamed).
- import_set_failed: the whole file failed; repair the source object (or the source file
  Stripe kept) and remediate every row of it.
- poller_rows: rows the bundled poller found invalid (its failed-records file).
- error_report: a meter error report whose sample identifiers are rows we imported.

The import-set tasks leave out the rows another version of the object took
(`object_runs.TakenBefore`), another run over it handled (`HandledElsewhere`), or a later
version holds (`_TakenAgain`).

A task whose input cannot be found or read is not retried: it raises a critical alert and
reports why. Any other failure (Stripe, S3, database) raises, so the worker retries it.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from remediation.filetypes import FileFormat
from remediation.ports import LeavesOut
from remediation.records import UsageRecord
from remediation.repair import plan_input, read_repaired
from service.errors import TaskInputMissing
from service.jobs.inputs import (
    JobDeps,
    download,
    event_time,
    fetch_source,
    identifiers_in,
    later_version,
    next_generation,
    run_lineage,
)
from service.jobs.object_runs import (
    HandledElsewhere,
    LeftOut,
    RefusedAgain,
    TakenBefore,
    object_sources,
    version_label,
)
from service.jobs.runs import RunContext, RunRequest, execute_run
from service.jobs.stages import Stage, Stages
from service.jobs.store.lineage import refused_among, runs_correcting
from service.jobs.store.reports import POLLER_ORIGIN, import_set, mark_import_set_remediated
from service.jobs.store.runs import (
    failed_file_run_key,
    finished_run,
    import_set_run_key,
    unfinished_run,
)
from service.logs import log_event
from service.models import ImportSet, RunTrigger
from service.models._types import as_utc, utcnow
from service.poller.store import lookup_batches, row_numbers, sent_moments, taken_since

# --- import sets ---------------------------------------------------------------------------


def import_set_errors(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    file_id = import_set.errors_file_id
    if not file_id:
        return "no failed-records file"
    run_key = import_set_run_key(import_set_id, file_id)
    left = ""
    if finished_run(deps.run.engine, run_key) is None:
        with tempfile.TemporaryDirectory(prefix="meterfix-dl-") as tmp:
            stages = Stages()
            with stages.timing(Stage.DOWNLOAD):
                path = download(deps.files, file_id, Path(tmp))
            # a failed-records file: every row was rejected
            request = _rejected_rows(
                deps,
                stages,
                path,
                run_key=run_key,
                trigger=RunTrigger.IMPORT_SET_SUCCEEDED,
                source=file_id,
                tag=import_set_id,
                now=event_time(import_set),
                generation=next_generation(deps.run.bucket, import_set.source_object),
            )
            later = later_version(deps, import_set, Path(tmp))
            rows = _TakenAgain(deps, import_set, later)
            # rows another version of the object took (billed then)
            taken = TakenBefore(deps, import_set, path, Path(tmp) / "taken", run_key)
            # rows an error report's run over the object (or another import set's) took
            key = import_set.source_object
            refused = RefusedAgain(rows.since, version_label(import_set, "refused again"))
            elsewhere = HandledElsewhere(deps.run.engine, deps.run.bucket, key, run_key, refused)

            _run_file(
                deps.run,
                request,
                path,
                leave_out=(rows, taken, elsewhere),
                allow_none=lambda: rows.left + taken.left + elsewhere.left > 0,
            )
            left = rows.outcome() + elsewhere.outcome() + taken.outcome()
    return _mark_import_set(deps.run.engine, import_set_id, run_key) + left


def import_set_failed(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    if import_set.status != "failed":  # a newer event said otherwise: some rows were billed
        return f"not repaired: the import set is {import_set.status} now, not failed"
    run_key = failed_file_run_key(import_set_id)
    left = ""
    if finished_run(deps.run.engine, run_key) is None:
        crashed = unfinished_run(deps.run.engine, run_key)  # a try before: its names stand
        with tempfile.TemporaryDirectory(prefix="meterfix-dl-") as tmp:
            stages = Stages()
            with stages.timing(Stage.DOWNLOAD):
                before = crashed.source if crashed is not None else None
                path, source, copied = fetch_source(deps, import_set, Path(tmp), before)
            # the whole file failed: none of its rows was billed
            request = _rejected_rows(
                deps,
                stages,
                path,
                run_key=run_key,
                trigger=RunTrigger.IMPORT_SET_FAILED,
                source=source,
                tag=import_set_id,
                now=event_time(import_set),
                generation=crashed.generation
                if crashed is not None
                else next_generation(deps.run.bucket, source),
            )
            # read from Stripe's copy: the object the import set names holds other bytes
            later = later_version(deps, import_set, Path(tmp), path) if copied else None
            rows = _TakenAgain(deps, import_set, later)
            # a file the bundled poller failed whole: it never sends a row another version
            # of some object sent (the day's file rewritten with the rows so far) unless a
            # run over the object quarantined it since (Stripe refused that send); one
            # Stripe's connector failed: not a row it took from another version
            key = import_set.source_object
            sent = _SourceRows(deps.run.engine, None)
            taken = None
            if not _by_poller(import_set):
                taken = TakenBefore(deps, import_set, path, Path(tmp) / "taken", run_key)
            else:
                sources = object_sources(deps.run.engine, deps.run.bucket, key)
                sent.refused_by = runs_correcting(deps.run.engine, sources)
            # rows another run over the object corrected or quarantined (one it quarantined
            # is refused again: the whole file was)
            refused = RefusedAgain(rows.since, version_label(import_set, "refused again"))
            elsewhere = HandledElsewhere(deps.run.engine, deps.run.bucket, key, run_key, refused)

            def none_left() -> bool:
                return rows.left + sent.sent + elsewhere.left + (taken.left if taken else 0) > 0

            leave_out = (rows, sent if taken is None else taken, elsewhere)
            _run_file(deps.run, request, path, leave_out=leave_out, allow_none=none_left)
            left = rows.outcome() + elsewhere.outcome() + _sent_before(sent.sent, run_key, source)
            left += taken.outcome() if taken else ""
    return _mark_import_set(deps.run.engine, import_set_id, run_key) + left


def poller_rows(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    run_key = f"poller:{import_set_id}"
    left = ""
    if finished_run(deps.run.engine, run_key) is None:
        path_text = import_set.detail.get("failed_records_path")
        path = Path(str(path_text)) if path_text else None
        if path is None or not path.exists():
            raise TaskInputMissing(
                f"the poller's failed-records file for {import_set.source_object} is gone; "
                "re-import the object to rebuild it"
            )
        # the rows the poller refused (never sent)
        request = _rejected_rows(
            deps,
            Stages(),
            path,
            run_key=run_key,
            trigger=RunTrigger.POLLER,
            source=import_set.source_object or import_set_id,
            tag=import_set_id,
            now=int((as_utc(import_set.created_at) or utcnow()).timestamp()),
            generation=next_generation(deps.run.bucket, import_set.source_object),
        )
        rows = _SourceRows(deps.run.engine, import_set.source_object or "")
        _run_file(deps.run, request, path, rows, allow_none=lambda: rows.sent > 0)
        if rows.sent:
            log_event(
                "remediation.rows_sent_since",
                level=logging.WARNING,
                run_key=run_key,
                rows=rows.sent,
                key=import_set.source_object,
            )
            left = f"; {rows.sent} left out: sent since from another version of the file"
    return _mark_import_set(deps.run.engine, import_set_id, run_key) + left


def _by_poller(import_set: ImportSet) -> bool:
    return import_set.origin == POLLER_ORIGIN


def _sent_before(count: int, run_key: str, key: str) -> str:
    if not count:
        return ""
    log_event(
        "remediation.rows_sent_since", level=logging.WARNING, run_key=run_key, rows=count, key=key
    )
    return f"; {count} left out: sent before from another version of the file"


def _rejected_rows(
    deps: JobDeps,
    stages: Stages,
    path: Path,
    *,
    run_key: str,
    trigger: RunTrigger,
    source: str,
    tag: str,
    now: int,
    generation: int,
) -> RunRequest:
    """The run of a CSV file holding rejected rows only (each row goes to a corrected output
    or to quarantine), with its lineage looked up (timed as the lineage stage). `generation`:
    the source object's + 1 (`next_generation`); the run's is raised above any that lineage
    says wrote one of the file's identifiers (`run_lineage`)."""
    with stages.timing(Stage.LINEAGE):
        generation, lineage, traced_from = run_lineage(
            deps.run.engine, path, deps.run.rules, source, generation
        )
    return RunRequest(
        run_key=run_key,
        trigger=trigger,
        source=source,
        tag=tag,
        fmt=FileFormat.CSV,
        now=now,
        generation=generation,
        lineage=lineage,
        input_generation=traced_from,
        rejected=True,
        stages=stages,
    )


RecordsTransform = Callable[[Iterator[UsageRecord]], Iterator[UsageRecord]]


def _run_file(
    ctx: RunContext,
    request: RunRequest,
    path: Path,
    transform: RecordsTransform | None = None,
    allow_none: Callable[[], bool] = lambda: False,
    leave_out: Sequence[LeavesOut] = (),
) -> None:
    """Read `path` with the whole-file repairs applied and run it. A file with no rows at
    all is a failure a person must look at (Stripe said rows failed), unless `transform` or
    `leave_out` (rows left out by identifier, on the run's columns) left them all out for a
    reason of its own (`allow_none()`, asked after the run)."""
    plan = plan_input(path, ctx.rules)
    run = RunRequest(**{**request.__dict__, "fmt": plan.fmt, "columns": plan.columns or None})
    with path.open("rb") as stream:
        records = read_repaired(stream, plan, ctx.rules)
        done = execute_run(ctx, run, transform(records) if transform else records, leave_out)
    if done.input_rows == 0 and not allow_none():
        raise TaskInputMissing(f"{request.source} has no usage rows to remediate")


class _SourceRows:
    """The rows the poller refused, each with its row number in the source object (the
    poller recorded every row's identifier, so the audit points at the object's own rows),
    without the rows a version of some object sent since (`sent`: how many): the customer
    fixed the row and uploaded the file again while this task waited. Such a row was billed
    as it is; corrected, it would go out a second time under a derived identifier. Unless
    one of the runs `refused_by` (an error report's, a re-run's) quarantined it after that
    send: Stripe refused it, never billed (as the poller's `OtherVersions` tells)."""

    def __init__(self, engine: Engine, key: str | None) -> None:
        """`key`: the object whose row numbers the records take (None: they keep theirs,
        read from the object itself)."""
        self.engine, self.key, self.sent = engine, key, 0
        self.refused_by: list[int] = []

    def _sent(self, identifiers: set[str]) -> set[str]:
        sent = sent_moments(self.engine, identifiers)
        held = refused_among(self.engine, self.refused_by, sorted(sent)) if sent else {}
        return {i for i, at in sent.items() if i not in held or held[i] <= at}

    # `remediation.ports.LeavesOut`, for rows that keep their own numbers (`key` None)
    excluded = _sent

    def count_left(self, rows: int) -> None:
        self.sent += rows

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        for batch, identifiers in lookup_batches(records):
            numbers = {} if self.key is None else row_numbers(self.engine, self.key, identifiers)
            sent = self._sent(identifiers)
            for record in batch:
                if record.identifier in sent:
                    self.sent += 1
                    continue
                record.row_number = numbers.get(record.identifier or "", record.row_number)
                yield record


class _TakenAgain(LeftOut):
    """The rows of an import set Stripe's S3 connector refused, without those a later object
    version holds (`left`: how many): the connector takes every version whole, so it took
    them again from it (billed as the customer fixed them by hand, or refused again and
    reported again). Corrected now, such a row would go out a second time under a derived
    identifier. A later version: the one the import set names now, when it is one
    (`inputs.later_version`, downloaded: `later`), and (index mode) any version the poller
    indexed, uploaded after the import set's event."""

    def __init__(self, deps: JobDeps, import_set: ImportSet, later: Path | None) -> None:
        self.engine = deps.run.engine
        self.since = datetime.fromtimestamp(event_time(import_set), UTC)
        self.held = identifiers_in(later, deps.run.rules) if later is not None else set()

    def excluded(self, identifiers: set[str]) -> set[str]:
        return taken_since(self.engine, identifiers, self.since) | self.held

    def outcome(self) -> str:
        what = "left to Stripe's connector: a version of the file uploaded since holds them"
        return self.said("remediation.rows_taken_again", what)


def _import_set(engine: Engine, import_set_id: str) -> ImportSet:
    row = import_set(engine, import_set_id)
    if row is None:
        raise TaskInputMissing(f"import set {import_set_id} is not recorded")
    return row


def _mark_import_set(engine: Engine, import_set_id: str, run_key: str) -> str:
    mark_import_set_remediated(engine, import_set_id, run_key)
    return f"remediated ({run_key})"


__all__ = ["import_set_errors", "import_set_failed", "poller_rows"]
