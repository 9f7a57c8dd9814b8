"""The mechanics of a sorted stage: a run's rows staged in a temporary table on a connection of
their own and loaded sorted by identifier (SQLite in chunks, PostgreSQL in one statement), apart
from the two stages of `loads.py` that say which table and columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Connection, Engine, MetaData, Table, select

from service.db.bulk import bulk_load_rows
from service.db.locks import Fence, unfenced
from service.jobs.store.runs import RUNS

# The columns a run's rows share, written by the load, not staged (`SortedStage`).
FIXED = ("run_id", "source")

# What a NUL of a staged text is held as (an event's text holds it so too, handlers/_fields):
# PostgreSQL's text holds none (a NUL in a quarantined row's identifier, customer, meter or
# code failed the run's load, and the task was retried until dead, its file's rows never
# billed), and SQLite's `substr` of a value cut to its column stopped at it (`j11\x00` stored
# as `j11`, another row's identifier). The row's record keeps it, escaped.
NUL_HELD_AS = "\ufffd"

# Rows per load transaction on SQLite (each holds the write lock while webhooks wait: ~0.2 s).
LOAD_CHUNK = 100_000
# Helper threads SQLite's sorter may use to sort the staged rows (`PRAGMA threads`; 0 by
# default): 900,000 corrections were loaded in 2.8-3.4 s with none, 2.3-2.7 s with 1-4.
SORT_THREADS = 2


class SortedStage:
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

    def __enter__(self) -> SortedStage:
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

    def _without_nul(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """`rows` with a NUL in a text column held as U+FFFD (`NUL_HELD_AS`), JSON columns
        (`as_text`, whose text escapes it) as they are."""
        texts = [
            at
            for at, name in enumerate(self.staged_columns)
            if name not in self.as_text and self.binary[name] == "text"
        ]
        # ~0.1 s for a run's 233,000 quarantined rows (bench/service_path.py); joining each
        # column's values first was no faster
        if not any(isinstance(row[at], str) and "\x00" in row[at] for row in rows for at in texts):
            return rows
        return [
            tuple(
                value.replace("\x00", NUL_HELD_AS)
                if at in texts and isinstance(value, str)
                else value
                for at, value in enumerate(row)
            )
            for row in rows
        ]

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Stage rows: tuples of the stage's `columns`, each starting with the run's source
        (a row of another source is refused, and nothing of the call is staged)."""
        if not rows:
            return
        sources = set(map(itemgetter(0), rows))
        if sources != {self.source}:
            others = sorted(sources - {self.source})
            raise ValueError(f"{self.what} of source {self.source!r} only, not of {others!r}")
        staged = self._without_nul([row[1:] for row in rows])
        self._note_lengths(staged)
        with self.connection.begin():
            self._stage(staged)
        self.staged += len(rows)

    def load(self, fence: Fence = unfenced) -> int:
        """Insert the staged rows into the table, sorted, with the run's id and source; the
        number inserted. `fence` first in each transaction (the run's locks held still)."""
        if not self.staged:
            return 0
        fixed = {"run_id": self.run_id, "source": self.source}
        into = f"{', '.join(FIXED)}, {self.listed}"
        # Arrival order: the stage is only appended to, so its rows' physical places follow it.
        order = "ctid" if self.postgres else "rowid"
        if self.postgres:
            self._load_in_one_statement(fixed, into, order, fence)
            return self.staged
        self._sort_stage(order)
        self._load_in_chunks(fixed, into, fence)
        return self.staged

    def _load_in_one_statement(
        self, fixed: Mapping[str, Any], into: str, order: str, fence: Fence
    ) -> None:
        """PostgreSQL: the staged rows inserted sorted, in one statement and transaction."""
        values = ", ".join(f"%({name})s" for name in FIXED)
        with self.connection.begin():
            fence(self.connection)
            _check_run(self.connection, self.run_id, self.what)
            self.connection.exec_driver_sql(
                f"INSERT INTO {self.target.name} ({into}) "
                f"SELECT {values}, {self._selected()} "
                f"FROM {self.stage_name} ORDER BY identifier, {order}",
                fixed,
            )

    def _sort_stage(self, order: str) -> None:
        """SQLite: a sorted copy of the stage (`sorted_name`), the chunks' source."""
        with self.connection.begin():
            # the connection is the stage's own, and closed with it (`close`)
            self.connection.exec_driver_sql(f"PRAGMA threads={SORT_THREADS}")
            self.connection.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {self.sorted_name} AS SELECT {self.listed} "
                f"FROM {self.stage_name} ORDER BY identifier, {order}"
            )

    def _load_in_chunks(self, fixed: Mapping[str, Any], into: str, fence: Fence) -> None:
        """SQLite: the sorted copy inserted in transactions of `LOAD_CHUNK` rows."""
        values = ", ".join("?" for _ in FIXED)
        for low in range(0, self.staged, LOAD_CHUNK):
            with self.connection.begin():
                fence(self.connection)
                _check_run(self.connection, self.run_id, self.what)
                self.connection.exec_driver_sql(
                    f"INSERT INTO main.{self.target.name} ({into}) "
                    f"SELECT {values}, {self._selected()} FROM temp.{self.sorted_name} "
                    "WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
                    (*(fixed[name] for name in FIXED), low, low + LOAD_CHUNK),
                )

    def close(self) -> None:
        """Drop the staging tables with the connection: closed, not handed back to the pool
        (dropping a large temporary table page by page took SQLite most of a second; a
        closed connection takes them along at once, on both databases)."""
        self.connection.invalidate()
        self.connection.close()


def _check_run(connection: Connection, run_id: int, what: str) -> None:
    """What a foreign key did per row, once per transaction: the run exists and cannot go
    while its rows go in (correction_audit and quarantined_rows have no key on run_id)."""
    query = select(RUNS.c.id).where(RUNS.c.id == run_id)
    found = connection.execute(query.with_for_update(key_share=True)).first()
    if found is None:
        raise LookupError(f"remediation run {run_id} does not exist: {what} not loaded")


# A PostgreSQL stage's column types, by the binary COPY type each is staged as.
_PG_STAGE_TYPES = {"int4": "INTEGER", "text": "TEXT", "timestamptz": "TIMESTAMPTZ"}
