"""What each remediation task does: find the rows that failed, then `execute_run` them.

- import_set_errors: the failed-records file of an import set (Stripe Files API, streamed).
- import_set_failed: the whole file failed; repair the source object (or the source file
  Stripe kept) and remediate every row of it.
- poller_rows: rows the bundled poller found invalid (its failed-records file).
- error_report: a meter error report whose sample identifiers are rows we imported.

Each task's file is run through `file_runs.py`. The import-set tasks leave out the rows
another version of the object took (`object_versions.TakenBefore`), another run over it handled
(`HandledElsewhere`), or a later version holds (`later_rows.TakenAgain`): `left_out.left_out`.

A task whose input cannot be found or read is not retried: it raises a critical alert and
reports why. Any other failure (Stripe, S3, database) raises, so the worker retries it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy import Engine

from remediation.errors import EmptyFile, UnreadableFile
from remediation.repair import plan_input, read_repaired
from remediation.rules import Rules
from service.errors import TaskInputMissing
from service.jobs.file_runs import SourceRows, rejected_rows, run_file
from service.jobs.input_lineage import source_lineage
from service.jobs.inputs import (
    JobDeps,
    download,
    event_time,
    fetch_source,
    later_version,
    warn_rows_short,
)
from service.jobs.left_out import left_out, rows_sent_since
from service.jobs.object_runs import one_run_an_object
from service.jobs.runs import run_done
from service.jobs.stages import Stage, Stages
from service.jobs.store.reports import (
    import_set,
    mark_import_set_dropped,
    mark_import_set_remediated,
)
from service.jobs.store.runs import (
    failed_file_run_key,
    import_set_run_key,
    unfinished_run,
)
from service.models import ImportSet, RemediationRun, RunTrigger
from service.models._types import as_utc, utcnow
from service.notify.alerts import raise_alert
from service.poller.store import row_numbers_path

# --- import sets ---------------------------------------------------------------------------


def import_set_errors(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    file_id = import_set.errors_file_id
    if not file_id:
        return "no failed-records file"
    run_key = import_set_run_key(import_set_id, file_id)
    left = ""
    if run_done(deps.run, run_key) is None:
        with tempfile.TemporaryDirectory(prefix="meterfix-dl-") as tmp:
            left = _remediate_failed_records(
                deps, import_set, import_set_id, file_id, run_key, Path(tmp)
            )
    return _mark_import_set(deps.run.engine, import_set_id, run_key) + left


def _remediate_failed_records(
    deps: JobDeps,
    import_set: ImportSet,
    import_set_id: str,
    file_id: str,
    run_key: str,
    tmp: Path,
) -> str:
    """Remediate the rows of the import set's failed-records file (`file_id`, fetched into
    `tmp`); what the task's outcome says of the rows left out."""
    stages = Stages()
    with stages.timing(Stage.DOWNLOAD):
        path = download(deps.files, file_id, tmp)
    # a failed-records file: every row was rejected
    request = rejected_rows(
        deps,
        stages,
        path,
        run_key=run_key,
        trigger=RunTrigger.IMPORT_SET_SUCCEEDED,
        source=file_id,
        tag=import_set_id,
        now=event_time(import_set),
        origin=source_lineage(deps.run.bucket, import_set.source_object),
    )
    later = later_version(deps, import_set, tmp)
    # what other runs over the object handled, then this run's rows, in its turn
    run = deps.run
    with one_run_an_object(
        run.engine, run.bucket.prefix, import_set.source_object, run.waiting_turn
    ) as lock:
        leaving = left_out(deps, import_set, later, path, tmp, run_key)
        run_file(
            run.holding(lock),
            request,
            path,
            leave_out=leaving.leave_out(),
            allow_none=leaving.none_left,
        )
    warn_rows_short(deps, import_set, run_key, leaving.count())
    return leaving.outcome(run_key, file_id)


def import_set_failed(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    if import_set.status != "failed":  # a newer event said otherwise: some rows were billed
        return f"not repaired: the import set is {import_set.status} now, not failed"
    run_key = failed_file_run_key(import_set_id)
    left = ""
    if run_done(deps.run, run_key) is None:
        crashed = unfinished_run(deps.run.engine, run_key)  # a try before: its names stand
        with tempfile.TemporaryDirectory(prefix="meterfix-dl-") as tmp:
            try:
                left = _repair_failed_file(
                    deps, import_set, import_set_id, run_key, crashed, Path(tmp)
                )
            except _Dropped as dropped:
                return _drop(deps, import_set, import_set_id, dropped.why)
    return _mark_import_set(deps.run.engine, import_set_id, run_key) + left


class _Dropped(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _nothing_to_import(path: Path, rules: Rules) -> str | None:
    """Why a whole-file failure's source holds nothing to import (DESIGN: "empty files
    dropped"): no byte but a BOM or white space, or no row (a header, `[]`). None: it holds
    rows, or cannot be read (the run says why)."""
    try:
        plan = plan_input(path, rules)
    except EmptyFile as exc:
        return exc.reason
    except UnreadableFile:
        return None
    try:
        with path.open("rb") as stream:
            if next(read_repaired(stream, plan, rules), None) is None:
                return "no usage rows: nothing to import (dropped)"
    except UnreadableFile:
        return None
    return None


def _drop(deps: JobDeps, import_set: ImportSet, import_set_id: str, why: str) -> str:
    """An empty source dropped: the import set done without a run, an info alert saying so
    (it was a critical "cannot remediate", and an empty run's audit file was uploaded)."""
    source = import_set.source_object or import_set.source_file_id or import_set_id
    raise_alert(
        deps.run.engine,
        key=f"remediation:dropped:{import_set_id}",
        severity="info",
        kind="remediation_input",
        subject=f"import set {import_set_id}: {source} dropped",
        message=f"{source}: {why}",
    )
    mark_import_set_dropped(deps.run.engine, import_set_id, why)
    return f"dropped: {why}"


def _repair_failed_file(
    deps: JobDeps,
    import_set: ImportSet,
    import_set_id: str,
    run_key: str,
    crashed: RemediationRun | None,
    tmp: Path,
) -> str:
    """Remediate every row of a file that failed whole (fetched into `tmp`, or the one a
    crashed try fetched); what the task's outcome says of the rows left out."""
    stages = Stages()
    with stages.timing(Stage.DOWNLOAD):
        before = crashed.source if crashed is not None else None
        path, source, copied = fetch_source(deps, import_set, tmp, before)
    if crashed is None and (why := _nothing_to_import(path, deps.run.rules)) is not None:
        raise _Dropped(why)
    # the whole file failed: none of its rows was billed
    request = rejected_rows(
        deps,
        stages,
        path,
        run_key=run_key,
        trigger=RunTrigger.IMPORT_SET_FAILED,
        source=source,
        tag=import_set_id,
        now=event_time(import_set),
        origin=source_lineage(deps.run.bucket, source),
        generation=crashed.generation if crashed is not None else None,
    )
    # read from Stripe's copy: the object the import set names holds other bytes
    later = later_version(deps, import_set, tmp, path) if copied else None
    # what other runs over the object handled, then this run's rows, in its turn
    run = deps.run
    with one_run_an_object(
        run.engine, run.bucket.prefix, import_set.source_object, run.waiting_turn
    ) as lock:
        leaving = left_out(deps, import_set, later, path, tmp, run_key, whole_file=True)
        run_file(
            run.holding(lock),
            request,
            path,
            leave_out=leaving.leave_out(),
            allow_none=leaving.none_left,
        )
    return leaving.outcome(run_key, source)


def poller_rows(deps: JobDeps, import_set_id: str) -> str:
    import_set = _import_set(deps.run.engine, import_set_id)
    run_key = f"poller:{import_set_id}"
    left = ""
    if run_done(deps.run, run_key) is None:
        path = _poller_failed_records(import_set)
        left = _remediate_poller_rows(deps, import_set, import_set_id, run_key, path)
    outcome = _mark_import_set(deps.run.engine, import_set_id, run_key) + left
    _remove_failed_records(import_set)
    return outcome


def _remove_failed_records(import_set: ImportSet) -> None:
    """Delete the poller's failed-records file of an import set whose run is recorded done:
    kept, one a run (32 MB for 200,000 rows), they filled MFX_WORK_DIR over weeks until an
    import failed with ENOSPC. Never before the run is recorded: a try that crashed mid-run
    reads it again (`_poller_failed_records`); a try after the record reads nothing of it."""
    path_text = import_set.detail.get("failed_records_path")
    if path_text:
        Path(str(path_text)).unlink(missing_ok=True)
        row_numbers_path(Path(str(path_text))).unlink(missing_ok=True)


def _poller_failed_records(import_set: ImportSet) -> Path:
    """The poller's failed-records file of the import set; one that is gone stops the task."""
    path_text = import_set.detail.get("failed_records_path")
    path = Path(str(path_text)) if path_text else None
    if path is None or not path.exists():
        raise TaskInputMissing(
            f"the poller's failed-records file for {import_set.source_object} is gone; "
            "re-import the object to rebuild it"
        )
    return path


def _remediate_poller_rows(
    deps: JobDeps, import_set: ImportSet, import_set_id: str, run_key: str, path: Path
) -> str:
    """Remediate the rows of the poller's failed-records file at `path`; what the task's
    outcome says of the rows left out."""
    # the rows the poller refused (never sent)
    request = rejected_rows(
        deps,
        Stages(),
        path,
        run_key=run_key,
        trigger=RunTrigger.POLLER,
        source=import_set.source_object or import_set_id,
        tag=import_set_id,
        now=int((as_utc(import_set.created_at) or utcnow()).timestamp()),
        origin=source_lineage(deps.run.bucket, import_set.source_object),
    )
    etag = import_set.detail.get("etag")  # the version the poller imported
    key, version = import_set.source_object or "", str(etag) if etag else None
    rows = SourceRows(deps.run.engine, key, version, failed=path)
    run_file(deps.run, request, path, rows, allow_none=lambda: rows.sent > 0)
    return rows_sent_since(rows.sent, run_key, import_set.source_object, "since")


def _import_set(engine: Engine, import_set_id: str) -> ImportSet:
    row = import_set(engine, import_set_id)
    if row is None:
        raise TaskInputMissing(f"import set {import_set_id} is not recorded")
    return row


def _mark_import_set(engine: Engine, import_set_id: str, run_key: str) -> str:
    mark_import_set_remediated(engine, import_set_id, run_key)
    return f"remediated ({run_key})"


__all__ = ["import_set_errors", "import_set_failed", "poller_rows"]
