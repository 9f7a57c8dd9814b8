"""Remediation runs and their outputs: run keys, what a run writes (exactly once per run key,
see service/jobs/runs.py) and what is read of it, and the retention of their audit. The runs'
totals and charts are `run_counts.py`; loading a run's audit and quarantined rows is
`loads.py`; the look-ups of what other runs handled, corrected or wrote (lineage) are
`lineage.py`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, or_, select, update
from sqlmodel import Session, col
from sqlmodel import select as select_model

from service.db import session_scope
from service.db.locks import Fence, unfenced
from service.db.pages import Listing, Page, keyset
from service.db.statements import delete_batch_in
from service.models import RunStatus
from service.models._types import table_of, utcnow
from service.models.remediation import (
    CorrectionAudit,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
)

RUNS = table_of(RemediationRun)
QUARANTINED = table_of(QuarantinedRow)
OUTPUTS = table_of(OutputObject)
AUDIT = table_of(CorrectionAudit)
REPORT_PREFIX = "error_report:"
RUN_KEY_CHARS = 512  # the run_key column's length


def report_run_key(event_id: str, key: str) -> str:
    """The run key of an error report's run over the object `key`: `error_report:<event
    id>:<key>`, or, past the column's length (S3 keys run to 1,024 bytes: PostgreSQL refused
    the run, and the report's rows in that object were never remediated), the key's SHA-256
    in its place."""
    run_key = f"{REPORT_PREFIX}{event_id}:{key}"
    if len(run_key) <= RUN_KEY_CHARS:
        return run_key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{REPORT_PREFIX}{event_id}:sha256:{digest}"


def import_set_run_key(import_set_id: str, file_id: str) -> str:
    """The run key of an import set's failed-records run: `import_set:<id>:<file id>`, or,
    past the column's length (ids are held to 255 characters each: two such made a key
    PostgreSQL refused), the file id's SHA-256 in its place."""
    run_key = f"import_set:{import_set_id}:{file_id}"
    if len(run_key) <= RUN_KEY_CHARS:
        return run_key
    digest = hashlib.sha256(file_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"import_set:{import_set_id}:sha256:{digest}"


def failed_file_run_key(import_set_id: str) -> str:
    """The run key of the repair of an import set's file that failed whole."""
    return f"import_set_failed:{import_set_id}"


def import_set_of(run_key: str) -> str | None:
    """The import set a run of the import-set tasks remediated (its failed records,
    `import_set_run_key`, or its failed file, `import_set_failed:<id>`), by the run's key;
    None for any other run."""
    kind, _, rest = run_key.partition(":")
    if kind in ("import_set", "import_set_failed") and rest:
        return rest.split(":", 1)[0] if kind == "import_set" else rest
    return None


def report_of(run_key: str) -> str | None:
    """The event id of the error report a run remediated (`report_run_key`), by the run's
    key; None for any other run."""
    if not run_key.startswith(REPORT_PREFIX):
        return None
    return run_key.removeprefix(REPORT_PREFIX).partition(":")[0] or None


def run_keys(engine: Engine, run_ids: Sequence[int]) -> dict[int, str]:
    """run id -> run key, for these runs (one query)."""
    if not run_ids:
        return {}
    query = select_model(RemediationRun.id, RemediationRun.run_key).where(
        col(RemediationRun.id).in_(list(run_ids))
    )
    with Session(engine) as session:
        rows = session.exec(query).all()
    return {int(run_id): str(run_key) for run_id, run_key in rows if run_id is not None}


def purge_audit(connection: Connection, runs_finished_before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` audit rows of runs finished before the cutoff (the
    runs themselves stay, with their counts and outputs: lineage), in the caller's
    transaction."""
    old_runs = select(RUNS.c.id).where(RUNS.c.finished_at < runs_finished_before)
    return delete_batch_in(connection, AUDIT, AUDIT.c.run_id.in_(old_runs), batch)


# --- runs and their outputs ----------------------------------------------------------------


def list_runs(connection: Connection, page: Page) -> Listing:
    return keyset(connection, select(RUNS), RUNS.c.id, page)


def get_run(connection: Connection, run_id: int) -> dict[str, Any] | None:
    row = connection.execute(select(RUNS).where(RUNS.c.id == run_id)).first()
    return None if row is None else dict(row._mapping)


def run_outputs(connection: Connection, run_id: int) -> list[dict[str, Any]]:
    rows = connection.execute(
        select(OUTPUTS).where(OUTPUTS.c.run_id == run_id).order_by(OUTPUTS.c.id)
    ).all()
    return [dict(row._mapping) for row in rows]


def run_ids_by_key(connection: Connection, run_keys: Sequence[str]) -> dict[str, int]:
    if not run_keys:
        return {}
    rows = connection.execute(select(RUNS.c.run_key, RUNS.c.id).where(RUNS.c.run_key.in_(run_keys)))
    return {str(row[0]): int(row[1]) for row in rows}


def report_run_ids(connection: Connection, event_ids: Sequence[str]) -> dict[str, list[int]]:
    """The ids of the runs of each error report (oldest first), in one query: a key range
    per report on the unique run key, `error_report:<event id>:<object>`."""
    ranges = [
        and_(RUNS.c.run_key >= prefix, RUNS.c.run_key < prefix[:-1] + ";")
        for prefix in (f"{REPORT_PREFIX}{event_id}:" for event_id in event_ids)
    ]
    rows: list[tuple[str, int]] = []
    if ranges:
        # No ORDER BY: with one, SQLite scans every run instead of probing each range.
        query = select(RUNS.c.run_key, RUNS.c.id).where(or_(*ranges))
        rows = sorted(
            ((str(row[0]), int(row[1])) for row in connection.execute(query)),
            key=lambda row: row[1],
        )
    found: dict[str, list[int]] = {}
    for run_key, run_id in rows:
        event_id = run_key.removeprefix(REPORT_PREFIX).partition(":")[0]
        found.setdefault(event_id, []).append(run_id)
    return found


# --- a run's writes ------------------------------------------------------------------------


RUN_ERROR_CHARS = 2000  # as an inbox row's last error


def finished_run(engine: Engine, run_key: str) -> RemediationRun | None:
    with Session(engine) as session:
        run = session.exec(
            select_model(RemediationRun).where(RemediationRun.run_key == run_key)
        ).first()
    return run if run is not None and run.status == RunStatus.DONE else None


def unfinished_run(engine: Engine, run_key: str) -> RemediationRun | None:
    """The run of this key when a try of it started and did not finish (it crashed)."""
    with Session(engine) as session:
        run = session.exec(
            select_model(RemediationRun).where(RemediationRun.run_key == run_key)
        ).first()
    return run if run is not None and run.status != RunStatus.DONE else None


def start_run(
    engine: Engine,
    run_key: str,
    trigger: str,
    source: str,
    generation: int,
    input_generation: int | None = None,
    task_id: str | None = None,
) -> int:
    """Record the run as running (new, or again after a crashed try, whose audit, quarantined
    rows and outputs are deleted); its id. `input_generation`: the generation its input was
    traced from (None: not traced); `task_id`: the worker's task running it (`fail_task_runs`)."""
    return start_run_in(engine, run_key, trigger, source, generation, input_generation, task_id)[0]


def start_run_in(
    engine: Engine,
    run_key: str,
    trigger: str,
    source: str,
    generation: int,
    input_generation: int | None = None,
    task_id: str | None = None,
    tag: str | None = None,
) -> tuple[int, str | None]:
    """`start_run`, its outputs' folder `tag` recorded unless an earlier try recorded one: its
    id and the folder recorded (an earlier try's, where its objects are: the redo writes and
    looks for them there)."""
    with session_scope(engine) as session:
        run = session.exec(
            select_model(RemediationRun).where(RemediationRun.run_key == run_key)
        ).first()
        if run is None:
            run = RemediationRun(run_key=run_key, trigger=trigger)
        run.source, run.generation = source, generation
        run.input_generation, run.task_id = input_generation, task_id
        run.status, run.error, run.finished_at = RunStatus.RUNNING, None, None
        run.output_tag = run.output_tag or tag
        session.add(run)
        session.flush()
        assert run.id is not None
        for table in (AUDIT, QUARANTINED, OUTPUTS):  # a crashed earlier try
            session.execute(delete(table).where(table.c.run_id == run.id))
        return run.id, run.output_tag


def fail_task_runs(connection: Connection, task_id: str, error: str) -> int:
    """Fail the runs a task left running (it was dead-lettered: its workers died, or it ran
    out of time, on its last attempt): nothing else would ever end them. How many."""
    runs = table_of(RemediationRun)
    result = connection.execute(
        update(runs)
        .where(runs.c.task_id == task_id, runs.c.status == RunStatus.RUNNING)
        .values(status=RunStatus.FAILED, error=error[:RUN_ERROR_CHARS], finished_at=utcnow())
    )
    return int(result.rowcount or 0)


def fail_run(
    engine: Engine, run_id: int, error: str, outputs: Sequence[Mapping[str, Any]] = ()
) -> None:
    """Record that the run's try ended in `error` (cut to RUN_ERROR_CHARS): not running any
    more, with the `outputs` it uploaded before (a corrected one is imported whatever the run
    became). A later try (a retry, a replay) starts it again (`start_run`: they are deleted)."""
    with session_scope(engine) as session:
        run = session.get(RemediationRun, run_id)
        if run is not None and run.status != RunStatus.DONE:
            for output in outputs:
                session.add(OutputObject(run_id=run_id, **output))
            run.status, run.error, run.finished_at = (
                RunStatus.FAILED,
                error[:RUN_ERROR_CHARS],
                utcnow(),
            )
            session.add(run)


def finish_run(
    engine: Engine,
    run_id: int,
    summary: Mapping[str, Any],
    outputs: Sequence[Mapping[str, Any]],
    fence: Fence = unfenced,
    finishing: Callable[[Connection, int], None] | None = None,
) -> RemediationRun:
    """Record the run's outputs and counts, and that it is done, after `fence` (the locks the
    run is done under still held: `LockLost` otherwise, nothing recorded) and with what
    `finishing` writes, in one transaction."""
    with session_scope(engine) as session:
        fence(session.connection())
        if finishing is not None:
            finishing(session.connection(), run_id)
        run = session.get(RemediationRun, run_id)
        assert run is not None
        for output in outputs:
            session.add(OutputObject(run_id=run_id, **output))
        run.input_rows = int(summary["input_rows"])
        run.valid, run.corrected = int(summary["valid"]), int(summary["corrected"])
        run.quarantined = int(summary["quarantined"])
        run.by_code = dict(summary["by_code"])
        run.repairs = list(summary.get("repairs", ()))
        run.status, run.error, run.finished_at = RunStatus.DONE, None, utcnow()
        session.add(run)
    return run
