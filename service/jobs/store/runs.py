"""Remediation runs, their outputs and their correction audit: what a run writes (exactly
once per run key, see service/jobs/runs.py) and what is read of it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    and_,
    case,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlmodel import Session, col
from sqlmodel import select as select_model

from remediation.identifiers import hashed_identifier, plain_suffix
from remediation.outcomes import corrections_batch
from service.db import (
    PG_COPY_HEADER,
    PG_COPY_TRAILER,
    Listing,
    Page,
    bulk_load_rows,
    delete_batch_in,
    in_listed,
    keyset,
    pg_copy_data,
    pg_copy_rows,
    session_scope,
)
from service.models import RunStatus, RunTrigger
from service.models._types import as_utc, latest, table_of, utcnow
from service.models.poller import ImportedRow
from service.models.remediation import (
    CorrectionAudit,
    OutputKind,
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


def finished_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    return (
        (RUNS.c.status == RunStatus.DONE)
        & (RUNS.c.finished_at >= start)
        & (RUNS.c.finished_at < end)
    )


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


def run_totals(connection: Connection) -> tuple[int, int, int, int]:
    """Rows received, valid, corrected and quarantined, summed over every run."""
    totals = connection.execute(
        select(
            func.coalesce(func.sum(RUNS.c.input_rows), 0),
            func.coalesce(func.sum(RUNS.c.valid), 0),
            func.coalesce(func.sum(RUNS.c.corrected), 0),
            func.coalesce(func.sum(RUNS.c.quarantined), 0),
        )
    ).one()
    return int(totals[0]), int(totals[1]), int(totals[2]), int(totals[3])


def runs_finished_between(
    connection: Connection, start: datetime, end: datetime
) -> list[tuple[int, int, int, int, Any]]:
    """(input rows, valid, corrected, quarantined, by_code) of each run finished in
    [start, end)."""
    columns = (RUNS.c.input_rows, RUNS.c.valid, RUNS.c.corrected, RUNS.c.quarantined)
    rows = connection.execute(select(*columns, RUNS.c.by_code).where(finished_between(start, end)))
    return [(int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4]) for row in rows]


def top_runs_finished_between(
    connection: Connection, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """The runs finished in [start, end) that quarantined most, latest first among equals."""
    statement = (
        select(RUNS)
        .where(finished_between(start, end))
        .order_by(RUNS.c.quarantined.desc(), RUNS.c.finished_at.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(statement)]


# --- the overview's charts: runs summed per hour or day ------------------------------------


def _bucket_label(connection: Connection, hourly: bool) -> Any:
    """The run's hour or day as text, computed by the database (one GROUP BY, no rows out)."""
    if connection.dialect.name == "postgresql":
        pattern = "YYYY-MM-DD HH24:00" if hourly else "YYYY-MM-DD"
        utc: Any = literal_column("remediation_runs.created_at AT TIME ZONE 'UTC'")
        return func.to_char(utc, pattern)
    # SQLAlchemy keeps a SQLite time as text, `YYYY-MM-DD HH:MM:SS.ffffff` in UTC: its first
    # characters are the bucket (half the cost of strftime, which parses every value).
    if hourly:
        return func.substr(RUNS.c.created_at, 1, 13).concat(":00")
    return func.substr(RUNS.c.created_at, 1, 10)


def runs_per_bucket(
    connection: Connection, *, hourly: bool, start: datetime
) -> list[tuple[str, tuple[int, int, int], tuple[object, ...]]]:
    """Per hour or day since `start`: its label, rows valid, corrected, quarantined, and a
    fingerprint of its runs (how many, their counts, the latest finish, the highest id)."""
    label = _bucket_label(connection, hourly).label("bucket")
    sums = (func.sum(RUNS.c.valid), func.sum(RUNS.c.corrected), func.sum(RUNS.c.quarantined))
    rows = connection.execute(
        select(label, *sums, func.count(), func.max(RUNS.c.finished_at), func.max(RUNS.c.id))
        .where(RUNS.c.created_at >= start)
        .group_by(label)
    ).all()
    found = []
    for row in rows:
        counts = (int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))
        found.append((str(row[0]), counts, (*counts, *row[4:])))
    return found


def codes_per_bucket(
    connection: Connection, *, hourly: bool, since: datetime, until: datetime
) -> dict[str, dict[str, tuple[int, int]]]:
    """Rows per error code per hour or day, corrected and quarantined, summed by the database
    over the runs' `by_code` objects (json_each): 10,000 runs decoded in Python took 150 ms on
    PostgreSQL, the database does it in a fraction of that."""
    entry = func.json_each(RUNS.c.by_code).table_valued("key", "value").alias("entry")
    label = _bucket_label(connection, hourly).label("bucket")
    corrected, quarantined = (
        _json_int(connection, entry.c.value, "corrected"),
        _json_int(connection, entry.c.value, "quarantined"),
    )
    rows = connection.execute(
        select(label, entry.c.key, func.sum(corrected), func.sum(quarantined))
        .select_from(RUNS)
        .join(entry, true())
        .where(
            RUNS.c.created_at >= since,
            RUNS.c.created_at < until,
            RUNS.c.quarantined + RUNS.c.corrected > 0,
        )
        .group_by(label, entry.c.key)
    ).all()
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for row in rows:
        found.setdefault(str(row[0]), {})[str(row[1])] = (int(row[2] or 0), int(row[3] or 0))
    return found


def _json_int(connection: Connection, value: Any, key: str) -> Any:
    if connection.dialect.name == "postgresql":
        return cast(value.op("->>")(key), Integer)
    return func.json_extract(value, f"$.{key}")


# --- a run's writes ------------------------------------------------------------------------


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
) -> int:
    """Record the run as running (new, or again after a crashed try, whose audit, quarantined
    rows and outputs are deleted); its id. `input_generation`: the generation its input was
    traced from (None: not traced)."""
    with session_scope(engine) as session:
        run = session.exec(
            select_model(RemediationRun).where(RemediationRun.run_key == run_key)
        ).first()
        if run is None:
            run = RemediationRun(run_key=run_key, trigger=trigger)
        run.source, run.generation = source, generation
        run.input_generation = input_generation
        run.status = RunStatus.RUNNING
        session.add(run)
        session.flush()
        assert run.id is not None
        for table in (AUDIT, QUARANTINED, OUTPUTS):  # a crashed earlier try
            session.execute(delete(table).where(table.c.run_id == run.id))
        return run.id


# The columns of a correction as `AuditStage` stages it, in this order: the fields of
# `remediation.outcomes.CORRECTIONS` (its `row` is `row_number`).
AUDIT_COLUMNS = (
    "source",
    "row_number",
    "identifier",
    "new_identifier",
    "code",
    "rule",
    "field",
    "before",
    "after",
)

# A quarantined row as `QuarantineStage.add` takes it: these columns, in this order (`record`
# the row in full as JSON text, stored as it is; `created_at` a timestamp; the rest text or
# numbers).
QUARANTINE_COLUMNS = (
    "source",
    "row_number",
    "identifier",
    "code",
    "reason",
    "meter",
    "customer",
    "record",
    "created_at",
)

# The columns a run's rows share, written by the load, not staged (`_SortedStage`).
FIXED = ("run_id", "source")

# The staged columns' types in PostgreSQL's binary COPY: the record as text (a binary COPY of
# `json` would take a Python object, not its text), made JSON by the load.
_AUDIT_BINARY = {name: "int4" if name == "row_number" else "text" for name in AUDIT_COLUMNS[1:]}
_QUARANTINE_BINARY = {name: "text" for name in QUARANTINE_COLUMNS[1:]} | {
    "row_number": "int4",
    "created_at": "timestamptz",
}

# Rows per load transaction on SQLite (each holds the write lock while webhooks wait: ~0.2 s).
LOAD_CHUNK = 100_000
# Helper threads SQLite's sorter may use to sort the staged rows (`PRAGMA threads`; 0 by
# default): 900,000 corrections were loaded in 2.8-3.4 s with none, 2.3-2.7 s with 1-4.
SORT_THREADS = 2


class _SortedStage:
    """A run's rows for one table, staged as the engine hands them over and loaded into the
    table sorted by identifier when the run is done (`AuditStage`, `QuarantineStage`).

    Staged in a temporary table on one connection held for the run: private to it, no index,
    no lock on the database (SQLite keeps it in its temp store, PostgreSQL in session memory
    spilling to disk), so memory stays flat however many rows a run writes. Loaded sorted by
    identifier (then by arrival, so rows under one identifier keep their order): inserted in
    arrival order, the identifiers are random and every batch dirties pages all over the
    identifier indexes, each page written to the WAL again at every commit (900,000
    corrections: 20 s on SQLite in transactions of 20,000, 12 s on PostgreSQL); sorted, each
    index page is written about once (~4 s and ~6 s, bench/service_path.py; on PostgreSQL
    the identifiers sort byte by byte, as the tables' columns do: COLLATE "C"). SQLite loads
    in transactions of `LOAD_CHUNK` rows of a sorted copy; PostgreSQL in one statement. Ids
    follow identifier order within a run; `row_number` keeps the file's order.

    What every row of a run shares, its run's id and its source (the one file a run reads),
    is not staged: the load writes it (`FIXED`). Each row handed over starts with its source,
    checked against the run's and dropped (900,000 corrections carried ~60 MB of the same
    source text through the stage and the sort: SQLite's sort took 2.1-2.5 s with it, 1.0-1.5
    s without).

    The tables have no foreign key on run_id (migrations 0004, 0005): `load` checks that the
    run exists in each transaction that writes its rows."""

    target: Table  # the table loaded
    columns: tuple[str, ...]  # the columns of a row `add` takes, in order: the source first
    stage_name: str
    sorted_name: str
    what: str  # the rows, as an error names them
    binary: Mapping[str, str]  # each staged column's type in PostgreSQL's binary COPY
    # JSON columns handed over as their JSON text, stored as it is
    as_text: tuple[str, ...] = ()

    def __init__(self, engine: Engine, run_id: int, source: str) -> None:
        self.run_id, self.source = run_id, source
        self.staged_columns = self.columns[1:]
        # The stage as SQLAlchemy sees it: the target's columns' types (how values encode).
        typed = (Column(name, self.target.c[name].type) for name in self.staged_columns)
        self.table = Table(self.stage_name, MetaData(), *typed)
        self.connection = engine.connect()
        self.postgres = self.connection.dialect.name == "postgresql"
        self.staged = 0
        # Text columns of a bounded length (codes, identifiers, meters, customers), by their
        # place in a staged row: a value longer (an unknown code of a failed-records file, an
        # identifier Stripe refused for its length) is cut to it by the load, on both
        # databases (PostgreSQL refused the whole load: the run failed and was retried until
        # dead, every row of its file left unbilled).
        self.bounded = {
            at: length
            for at, name in enumerate(self.staged_columns)
            if (length := getattr(self.target.c[name].type, "length", None))
        }
        self.too_long = False  # a staged value is longer than its column
        quote = self.connection.dialect.identifier_preparer.quote
        self.listed = ", ".join(quote(name) for name in self.staged_columns)
        with self.connection.begin():
            for name in (self.stage_name, self.sorted_name):
                self.connection.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            self._create()

    def __enter__(self) -> _SortedStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        """The stage: on PostgreSQL its columns typed as they are copied (`binary`; the
        identifier ordered byte by byte, as the table's is); on SQLite shaped as the table's
        columns are."""
        if self.postgres:
            quote = self.connection.dialect.identifier_preparer.quote
            typed = ", ".join(
                f"{quote(name)} {_PG_STAGE_TYPES[self.binary[name]]}"
                + (' COLLATE "C"' if name == "identifier" else "")
                for name in self.staged_columns
            )
            statement = f"CREATE TEMPORARY TABLE {self.stage_name} ({typed})"
        else:
            statement = (
                f"CREATE TEMPORARY TABLE {self.stage_name} AS SELECT {self.listed} "
                f"FROM {self.target.name} WHERE 1 = 0"
            )
        self.connection.exec_driver_sql(statement)

    def _stage(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if self.postgres:
            self._copy_binary(rows, [self.binary[name] for name in self.staged_columns])
        else:
            names = self.staged_columns
            bulk_load_rows(self.connection, self.table, names, rows, as_stored=self.as_text)

    def _copy_binary(self, rows: Sequence[tuple[Any, ...]], types: Sequence[str]) -> None:
        """COPY in PostgreSQL's binary format (`types`: each column's): no text escaping or
        formatting of times on either side."""
        driver: Any = self.connection.connection.driver_connection
        statement = f"COPY {self.stage_name} ({self.listed}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)

    def _selected(self) -> str:
        """The staged columns as the load selects them (PostgreSQL makes JSON of the text),
        cut to their columns' lengths when a staged value is longer."""
        if not self.postgres and not self.too_long:
            return self.listed
        quote = self.connection.dialect.identifier_preparer.quote
        selected = []
        for at, name in enumerate(self.staged_columns):
            value = quote(name)
            if self.postgres and name in self.as_text:
                value = f"CAST({value} AS JSON)"
            elif self.too_long and at in self.bounded:
                value = f"substr({value}, 1, {self.bounded[at]})"
            selected.append(value)
        return ", ".join(selected)

    def _note_lengths(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if self.too_long:
            return
        self.too_long = any(
            isinstance(value := row[at], str) and len(value) > most
            for row in rows
            for at, most in self.bounded.items()
        )

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Stage rows: tuples of the stage's `columns`, each starting with the run's source
        (a row of another source is refused, and nothing of the call is staged)."""
        if not rows:
            return
        sources = set(map(itemgetter(0), rows))
        if sources != {self.source}:
            others = sorted(sources - {self.source})
            raise ValueError(f"{self.what} of source {self.source!r} only, not of {others!r}")
        staged = [row[1:] for row in rows]
        self._note_lengths(staged)
        with self.connection.begin():
            self._stage(staged)
        self.staged += len(rows)

    def load(self) -> int:
        """Insert the staged rows into the table, sorted, with the run's id and source; the
        number inserted."""
        if not self.staged:
            return 0
        fixed = {"run_id": self.run_id, "source": self.source}
        into = f"{', '.join(FIXED)}, {self.listed}"
        # Arrival order: the stage is only appended to, so its rows' physical places follow it.
        order = "ctid" if self.postgres else "rowid"
        if self.postgres:
            values = ", ".join(f"%({name})s" for name in FIXED)
            with self.connection.begin():
                _check_run(self.connection, self.run_id, self.what)
                self.connection.exec_driver_sql(
                    f"INSERT INTO {self.target.name} ({into}) "
                    f"SELECT {values}, {self._selected()} "
                    f"FROM {self.stage_name} ORDER BY identifier, {order}",
                    fixed,
                )
            return self.staged
        with self.connection.begin():
            # the connection is the stage's own, and closed with it (`close`)
            self.connection.exec_driver_sql(f"PRAGMA threads={SORT_THREADS}")
            self.connection.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {self.sorted_name} AS SELECT {self.listed} "
                f"FROM {self.stage_name} ORDER BY identifier, {order}"
            )
        values = ", ".join("?" for _ in FIXED)
        for low in range(0, self.staged, LOAD_CHUNK):
            with self.connection.begin():
                _check_run(self.connection, self.run_id, self.what)
                self.connection.exec_driver_sql(
                    f"INSERT INTO main.{self.target.name} ({into}) "
                    f"SELECT {values}, {self._selected()} FROM temp.{self.sorted_name} "
                    "WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
                    (*(fixed[name] for name in FIXED), low, low + LOAD_CHUNK),
                )
        return self.staged

    def close(self) -> None:
        """Drop the staging tables with the connection: closed, not handed back to the pool
        (dropping a large temporary table page by page took SQLite most of a second; a
        closed connection takes them along at once, on both databases)."""
        self.connection.invalidate()
        self.connection.close()


class AuditStage(_SortedStage):
    """A run's corrections, as the engine hands them over (record batches of
    `remediation.outcomes.CORRECTIONS`, or `Correction` tuples), loaded into
    `correction_audit`.

    On PostgreSQL a batch is staged with its rows encoded for binary COPY by Arrow kernels
    (`db.pg_copy_rows`): no Python object per correction on either side, so the engine builds
    no tuples (the service's remediation stage 0.5-0.9 s shorter for 900,000 corrections,
    bench/service_path.py); the staging itself takes as long as psycopg's `write_row` of
    tuples did (3.0-3.5 s: PostgreSQL's own time). SQLite takes tuples, made here.

    Tried and dropped: corrections spilled to an Arrow file, sorted by Arrow and sent in one
    binary COPY straight into the table (no stage, no INSERT ... SELECT ... ORDER BY): its
    load took 11.6-15.1 s on PostgreSQL and 11.8-14.6 s on SQLite beside the uploads, no
    better than staged and sorted by the database (12.1-13.0 s, 11.3-11.9 s)."""

    target, columns, what = AUDIT, AUDIT_COLUMNS, "audit"
    stage_name, sorted_name = "mfx_audit_stage", "mfx_audit_sorted"
    binary = _AUDIT_BINARY

    def add(self, rows: pa.RecordBatch | Sequence[tuple[Any, ...]]) -> None:
        """Stage corrections, each of the run's source (a batch holding another source is
        refused, and nothing of it is staged)."""
        batch = rows if isinstance(rows, pa.RecordBatch) else corrections_batch(rows)
        if not len(batch):
            return
        sources = set(pc.unique(batch.column("source")).to_pylist())
        if sources != {self.source}:
            others = sorted(map(str, sources - {self.source}))
            raise ValueError(f"{self.what} of source {self.source!r} only, not of {others!r}")
        fields = batch.columns[1:]  # CORRECTIONS' fields after the source: the stage's columns
        if not self.too_long:
            self.too_long = any(
                (pc.max(pc.utf8_length(fields[at])).as_py() or 0) > most
                for at, most in self.bounded.items()
            )
        with self.connection.begin():
            if self.postgres:
                self._copy_encoded(pg_copy_rows(fields))
            else:
                values = [field.to_pylist() for field in fields]
                self._stage(list(zip(*values, strict=True)))
        self.staged += len(batch)

    def _copy_encoded(self, rows: pa.Array) -> None:
        """COPY rows `db.pg_copy_rows` encoded."""
        driver: Any = self.connection.connection.driver_connection
        statement = f"COPY {self.stage_name} ({self.listed}) FROM STDIN (FORMAT BINARY)"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.write(PG_COPY_HEADER)
            copy.write(pg_copy_data(rows))
            copy.write(PG_COPY_TRAILER)


class QuarantineStage(_SortedStage):
    """A run's quarantined rows (tuples of `QUARANTINE_COLUMNS`), loaded into
    `quarantined_rows`, the record as JSON text stored as it is (PostgreSQL: staged as text,
    made JSON by the load; 233,000 rows staged with text COPY took 3.0 s in a run, with
    binary COPY 1.5 s). 233,000 of them inserted 20,000 a transaction as they came took
    SQLite 5.9 s alone, staged and loaded sorted 3.3 s (the identifier index written in
    order; the customer index stays random); PostgreSQL 7.3 s against 5.1 s. The rows of a
    run are listed by id, so in identifier order, not the file's (`row_number` keeps it)."""

    target, columns, what = QUARANTINED, QUARANTINE_COLUMNS, "quarantined rows"
    stage_name, sorted_name = "mfx_quarantine_stage", "mfx_quarantine_sorted"
    binary = _QUARANTINE_BINARY
    as_text = ("record",)


def _check_run(connection: Connection, run_id: int, what: str) -> None:
    """What a foreign key did per row, once per transaction: the run exists and cannot go
    while its rows go in (correction_audit and quarantined_rows have no key on run_id)."""
    query = select(RUNS.c.id).where(RUNS.c.id == run_id)
    found = connection.execute(query.with_for_update(key_share=True)).first()
    if found is None:
        raise LookupError(f"remediation run {run_id} does not exist: {what} not loaded")


# A PostgreSQL stage's column types, by the binary COPY type each is staged as.
_PG_STAGE_TYPES = {"int4": "INTEGER", "text": "TEXT", "timestamptz": "TIMESTAMPTZ"}


def finish_run(
    engine: Engine, run_id: int, summary: Mapping[str, Any], outputs: Sequence[Mapping[str, Any]]
) -> RemediationRun:
    """Record the run's outputs and counts, and that it is done."""
    with session_scope(engine) as session:
        run = session.get(RemediationRun, run_id)
        assert run is not None
        for output in outputs:
            session.add(OutputObject(run_id=run_id, **output))
        run.input_rows = int(summary["input_rows"])
        run.valid, run.corrected = int(summary["valid"]), int(summary["corrected"])
        run.quarantined = int(summary["quarantined"])
        run.by_code = dict(summary["by_code"])
        run.status, run.error, run.finished_at = RunStatus.DONE, None, utcnow()
        session.add(run)
    return run


# --- the audit, read by the jobs -----------------------------------------------------------


def corrections_writing(
    engine: Engine, identifiers: Sequence[str]
) -> list[tuple[CorrectionAudit, int]]:
    """The corrections that wrote these identifiers (oldest first), with their run's
    generation. One query and one parameter however many identifiers (`db.in_listed`)."""
    wrote = in_listed(col(CorrectionAudit.new_identifier), identifiers, engine, "identifiers")
    with Session(engine) as session:
        rows = session.exec(
            select_model(CorrectionAudit, RemediationRun.generation)
            .join(RemediationRun, col(RemediationRun.id) == col(CorrectionAudit.run_id))
            .where(wrote)
            .order_by(col(CorrectionAudit.id))
        ).all()
    return [(audit, generation) for audit, generation in rows]


def handled_identifiers(
    engine: Engine, source: str | Sequence[str], other_than: str | None = None
) -> frozenset[str]:
    """The identifiers of the rows of `source` some run (other than the run of key
    `other_than`: a crashed try of it is done again, its rows deleted) already corrected or
    quarantined. By identifier, wherever the row stood: an object
    overwritten under its key may hold the same row at another number, and correcting it
    again sends the same derived identifier again (Stripe dedupes for 24 hours only). A row
    of a new version is never taken for one of the old by its number: rows without an
    identifier are named by what they hold, or, without a timestamp, by the object's version
    and row (`remediation.poller.RowNames`). Several sources: the runs of each (an object's
    key and the failed-records files of its import sets, `jobs.object_runs`)."""
    with Session(engine) as session:
        queries = handled_queries(source, other_than)
        return frozenset(str(i) for query in queries for i in session.exec(query).all())


def runs_of_sources(
    engine: Engine, sources: Sequence[str], other_than: str | None = None
) -> list[int]:
    """The ids of the runs whose source is one of `sources`, but the run of key
    `other_than`."""
    if not sources:
        return []
    query = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(list(sources)))
    if other_than is not None:
        query = query.where(RemediationRun.run_key != other_than)
    with Session(engine) as session:
        return sorted(int(i) for i in session.exec(query).all() if i is not None)


def handled_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs corrected or quarantined (a quarantined row
    sent again since, `taken_again`, is a new refusal: not counted), as `handled_identifiers`
    says, looked up for a batch of identifiers (two queries, each on an index led by
    `run_id`; none without runs)."""
    if not run_ids or not identifiers:
        return set()
    runs = list(run_ids)
    audit, held = col(CorrectionAudit.identifier), col(QuarantinedRow.identifier)
    corrected = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(runs))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    quarantined = (
        select_model(QuarantinedRow.identifier)
        .where(col(QuarantinedRow.run_id).in_(runs))
        .where(in_listed(held, identifiers, engine))
        .where(col(QuarantinedRow.taken_again).is_(None))
        .distinct()
    )
    with Session(engine) as session:
        found = [*session.exec(corrected).all(), *session.exec(quarantined).all()]
    return {str(identifier) for identifier in found}


def corrected_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs corrected (one query on an index led by
    `run_id`; none without runs)."""
    if not run_ids or not identifiers:
        return set()
    audit = col(CorrectionAudit.identifier)
    query = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(list(run_ids)))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    with Session(engine) as session:
        return {str(identifier) for identifier in session.exec(query).all()}


def runs_correcting(engine: Engine, source: str | Sequence[str]) -> list[int]:
    """The ids of the runs whose corrections are of rows of `source` (one, or several: an
    object's key and the failed-records files of its import sets, `reports.object_sources`):
    its own runs, and the quarantine re-runs that took its quarantined rows (a re-run's source
    is the re-run), and the re-runs that took the rows those re-runs quarantined again, to the
    end of the chain."""
    own, taken = correcting_queries(source)
    with Session(engine) as session:
        found = {int(i) for i in session.exec(own).all() if i is not None}
        later = {int(i) for i in session.exec(taken).all() if i is not None}
        while later - found:
            found |= later
            later = {int(i) for i in session.exec(reruns_of(sorted(later))).all()}
    return sorted(found | later)


def correcting_queries(source: str | Sequence[str]) -> tuple[Any, Any]:
    """The ids of `source`'s runs (one source or several), and of the re-runs that took the
    rows they quarantined (found by the runs' ids, which lead an index of quarantined_rows:
    filtered by `source` alone, a scan of every quarantined row at every import)."""
    sources = [source] if isinstance(source, str) else list(source)
    runs = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(sources))
    rerun = col(QuarantinedRow.rerun_id)
    taken = (
        select_model(rerun)
        .where(col(QuarantinedRow.run_id).in_(runs.scalar_subquery()))
        .where(col(QuarantinedRow.source).in_(sources), rerun.is_not(None))
        .distinct()
    )
    return runs, taken


def reruns_of(run_ids: Sequence[int]) -> Any:
    """The ids of the re-runs that took rows these runs quarantined (by run id: indexed)."""
    rerun = col(QuarantinedRow.rerun_id)
    return (
        select_model(rerun)
        .where(col(QuarantinedRow.run_id).in_(list(run_ids)), rerun.is_not(None))
        .distinct()
    )


def written_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` one of these runs wrote to a corrected output, so that it went
    out, or will, under a derived identifier: corrected (the audit: `run_id` leads its index
    with the identifier), or taken from quarantine by a re-run among them that did not
    quarantine it again (a re-run sends unchanged a row that passes now: its meter was
    created, its time is no longer ahead; no correction, no audit row)."""
    if not run_ids or not identifiers:
        return set()
    runs = list(run_ids)
    audit = col(CorrectionAudit.identifier)
    corrected = (
        select_model(CorrectionAudit.identifier)
        .where(col(CorrectionAudit.run_id).in_(runs))
        .where(in_listed(audit, identifiers, engine))
        .distinct()
    )
    held = col(QuarantinedRow.identifier)
    still_held = func.max(case((col(QuarantinedRow.rerun_id).is_(None), 1), else_=0))
    taken = (
        select_model(held)
        .where(col(QuarantinedRow.run_id).in_(runs))
        .where(in_listed(held, identifiers, engine))
        .group_by(held)
        .having(still_held == 0)  # every quarantined entry of it taken by a re-run
    )
    with Session(engine) as session:
        found = [*session.exec(corrected).all(), *session.exec(taken).all()]
        written = {str(identifier) for identifier in found}
        rest = [identifier for identifier in identifiers if identifier not in written]
        return written | _resent_unchanged(session, engine, runs, rest)


def _resent_unchanged(
    session: Session, engine: Engine, runs: list[int], identifiers: Sequence[str]
) -> set[str]:
    """Which of `identifiers` these runs wrote unchanged to a corrected output that the
    poller has imported or indexed since: a rejected row our validation passes (a whole-file
    failure's rows, a failed-records row without an error) goes out as `<id>-mfx<n>`
    counted valid, with no audit row. Its derived identifiers (either form: plain, or the first
    hashed one; a later hashed one only when two originals of an input were crafted to share
    it) are looked up among the poller's records of those outputs."""
    if not identifiers:
        return set()
    outputs = session.exec(
        select_model(OutputObject.key, OutputObject.generation)
        .where(col(OutputObject.run_id).in_(runs))
        .where(OutputObject.kind == OutputKind.CORRECTED)
    ).all()
    if not outputs:
        return set()
    keys, generations = sorted({key for key, _ in outputs}), {g for _, g in outputs}
    derived: dict[str, str] = {}
    for identifier in identifiers:
        for generation in generations:
            derived[identifier + plain_suffix(generation)] = identifier
            derived[hashed_identifier(identifier, generation)] = identifier
    held = col(ImportedRow.identifier)
    query = (
        select_model(held)
        .where(col(ImportedRow.object_key).in_(keys))
        .where(in_listed(held, list(derived), engine))
    )
    return {derived[str(identifier)] for identifier in session.exec(query).all()}


def refused_among(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> dict[str, datetime]:
    """identifier -> when it was last quarantined, for those of `identifiers` these runs hold
    in quarantine (not taken by a later re-run, not marked sent again since) after an error
    report's run or a re-run quarantined them. Quarantined after it was sent, such a row is
    one Stripe refused: never billed, so a new version of the file that holds it fixed sends
    it (the caller compares with when it was sent)."""
    if not run_ids or not identifiers:
        return {}
    held = col(QuarantinedRow.identifier)
    refused = (RunTrigger.ERROR_REPORT, RunTrigger.QUARANTINE_RERUN)
    query = (
        select_model(held, col(QuarantinedRow.created_at))
        .join(RemediationRun, col(RemediationRun.id) == col(QuarantinedRow.run_id))
        .where(col(QuarantinedRow.run_id).in_(list(run_ids)))
        .where(col(RemediationRun.trigger).in_([str(t) for t in refused]))
        .where(col(QuarantinedRow.rerun_id).is_(None), col(QuarantinedRow.taken_again).is_(None))
        .where(in_listed(held, identifiers, engine))
    )
    with Session(engine) as session:
        found = session.exec(query).all()
    return latest((str(identifier), as_utc(moment)) for identifier, moment in found)


def handled_queries(source: str | Sequence[str], other_than: str | None = None) -> tuple[Any, Any]:
    """The identifiers of `source` (one, or several) in the audit and among the quarantined
    rows, found by the ids of the runs of that source (`run_id` leads an index of each table;
    neither indexes `source`, which a run's rows all share: the audit's loader refuses any
    other). Filtered by `source` alone, each was a scan of its whole table, at every error
    report (the audit holds a row per correction of every run kept)."""
    sources = [source] if isinstance(source, str) else list(source)
    runs = select_model(RemediationRun.id).where(col(RemediationRun.source).in_(sources))
    if other_than is not None:
        runs = runs.where(RemediationRun.run_key != other_than)
    audit_run = col(CorrectionAudit.run_id).in_(runs.scalar_subquery())
    held_run = col(QuarantinedRow.run_id).in_(runs.scalar_subquery())
    audit_identifier, held_identifier = (
        col(CorrectionAudit.identifier),
        col(QuarantinedRow.identifier),
    )
    return (
        select_model(CorrectionAudit.identifier)
        .where(audit_run, col(CorrectionAudit.source).in_(sources))
        .where(audit_identifier.is_not(None))
        .distinct(),
        select_model(QuarantinedRow.identifier)
        .where(held_run, col(QuarantinedRow.source).in_(sources))
        .where(held_identifier.is_not(None))
        .where(col(QuarantinedRow.taken_again).is_(None))  # sent again since: a new refusal
        .distinct(),
    )
