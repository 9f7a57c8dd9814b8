"""Database engine construction and sessions (SQLite in WAL mode, or PostgreSQL)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import itemgetter
from pathlib import Path
from sqlite3 import SQLITE_LIMIT_VARIABLE_NUMBER
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    any_,
    bindparam,
    cast,
    delete,
    event,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSON
from sqlmodel import Session, create_engine

from remediation import jsonnumbers
from service.config import SQLiteSynchronous
from service.errors import SchemaNewer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# SQLite checkpoints the WAL into the database file after a commit that leaves the WAL longer
# than this many pages, on that commit's request path (fdatasync included). The worker
# checkpoints every pass (`checkpoint_wal`), so this larger limit (~16 MB) is only the safety
# net that bounds the WAL when no worker runs; SQLite's default is 1000 pages.
WAL_AUTOCHECKPOINT_PAGES = 4000
# Rows per INSERT statement in a SQLite bulk load (`bulk_load_rows`), parameter limit allowing.
ROWS_PER_INSERT = 256
# SQLite's page cache while a bulk load runs (`_roomier_cache`), in KiB.
BULK_CACHE_KIB = 16_384

# What a COMMIT waits for (MFX_SQLITE_SYNCHRONOUS). `normal`: in WAL mode a commit is written
# to the WAL before it returns, so it survives any crash of the process or of the service
# (kill -9 included), but the last commits can be lost if the machine loses power or the OS
# crashes before its next write-back. `full`: the WAL is fsynced on every commit, which also
# covers power loss, at several times the cost of a commit (see the README's intake figures).
_PRAGMAS: weakref.WeakKeyDictionary[Engine, Callable[[object], None]] = (
    weakref.WeakKeyDictionary()
)  # each SQLite engine's connection set-up, reused for its webhook writer


def sqlite_pragmas(engine: Engine) -> Callable[[object], None]:
    """The connection set-up of a SQLite engine (for a connection made beside its pool)."""
    return _PRAGMAS.get(engine) or partial(_sqlite_pragmas, synchronous=SQLiteSynchronous.NORMAL)


def make_engine(url: str, *, synchronous: str = SQLiteSynchronous.NORMAL) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout, foreign keys and `synchronous`.
    JSON columns are read with `jsonnumbers.loads`: a quarantined row stored in full keeps its
    numbers as its file spelled them (`12345678901234567.25`, not the float nearest), and a
    re-run of it writes them so."""
    if url.startswith("sqlite"):
        if synchronous not in set(SQLiteSynchronous):
            levels = ", ".join(SQLiteSynchronous)
            raise ValueError(f"SQLite synchronous must be one of: {levels}")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_deserializer=jsonnumbers.loads,
        )
        pragmas = partial(_sqlite_pragmas, synchronous=synchronous)
        _PRAGMAS[engine] = pragmas
        event.listen(engine, "connect", pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, json_deserializer=jsonnumbers.loads
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: object = None, *, synchronous: str) -> None:
    cursor = dbapi_connection.cursor()  # a DBAPI connection: untyped by PEP 249
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.close()


def checkpoint_wal(engine: Engine) -> None:
    """Copy committed WAL pages into a SQLite database file without waiting for anyone
    (PASSIVE), so web requests rarely run the automatic checkpoint; no-op elsewhere."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def insert_or_ignore(
    dialect_name: str, table: Table, index_elements: Sequence[str] | None = None
) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL or SQLite (written here only): a row
    that would repeat a unique key is skipped, not an error."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    statement: Insert = dialect.insert(table).on_conflict_do_nothing(index_elements=index_elements)
    return statement


DEFAULT_PAGE_LIMIT = 50
# The largest row id: ids are INTEGER columns, 32 bits on PostgreSQL (a larger number in a
# query is a DataError there, an OverflowError past 64 bits on SQLite).
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True)
class Page:
    """Keyset pagination: `limit` rows with id below `cursor` (None: from the newest)."""

    limit: int = DEFAULT_PAGE_LIMIT
    cursor: int | None = None


@dataclass(frozen=True)
class Listing:
    """One page of rows (as dicts) and the cursor of the next page (None: the last one)."""

    data: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"data": self.data, "next_cursor": self.next_cursor}


def keyset(connection: Connection, query: Select[Any], id_column: Any, page: Page) -> Listing:
    """Rows of `query` with id below the cursor, newest first, and the next cursor (every
    store's lists page this way: one indexed range, however deep the page)."""
    if page.cursor is not None:
        query = query.where(id_column < page.cursor)
    rows = connection.execute(query.order_by(id_column.desc()).limit(page.limit + 1)).all()
    more = len(rows) > page.limit
    data = [dict(row._mapping) for row in rows[: page.limit]]
    return Listing(data, str(data[-1]["id"]) if more else None)


def delete_batch(engine: Engine, table: Table, where: ColumnElement[bool], batch: int) -> int:
    """Delete at most `batch` rows of `table` matching `where` in one short transaction (the
    stores' purges for retention); the number deleted."""
    with engine.begin() as connection:
        return delete_batch_in(connection, table, where, batch)


def delete_batch_in(
    connection: Connection, table: Table, where: ColumnElement[bool], batch: int
) -> int:
    """`delete_batch` in the caller's transaction."""
    ids = select(table.c.id).where(where).limit(batch).scalar_subquery()
    return int(connection.execute(delete(table).where(table.c.id.in_(ids))).rowcount)


def bulk_load(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (column name -> value; every row the same columns) in bulk, inside the
    connection's transaction: PostgreSQL `COPY ... FROM STDIN`, otherwise driver
    `executemany` calls of many rows a statement (`bulk_load_rows`). Raw driver calls on a
    measured hot path (a run's audit and quarantined rows, bench/service_path.py):
    SQLAlchemy's executemany spends about 20 µs a row building parameters. Each value is
    encoded by its column's own SQLAlchemy type (JSON, timestamps), so the rows read back
    exactly as an ORM insert writes them."""
    if not rows:
        return
    names = [column.name for column in table.columns if column.name in rows[0]]
    picked = itemgetter(*names)
    values: list[Any] = [picked(row) for row in rows]  # tuples, in C
    if len(names) == 1:
        values = [(value,) for value in values]
    bulk_load_rows(connection, table, names, values)


def bulk_load_rows(
    connection: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    as_stored: Collection[str] = (),
) -> None:
    """`bulk_load` for rows that are tuples of the columns `names`, in that order. The values
    of the columns `as_stored` are already as the database stores them (a JSON column's text)
    and go in unchanged."""
    if not rows:
        return
    dialect = connection.dialect
    columns = [table.c[name] for name in names]
    coders = [  # only columns whose type encodes (JSON, times)
        (position, encode)
        for position, column in enumerate(columns)
        if column.name not in as_stored
        and (encode := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    values = _encoded(rows, coders) if coders else rows
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    listed = ", ".join(quote(name) for name in names)
    driver: Any = connection.connection.driver_connection
    if dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {target} ({listed}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    # Many rows a statement: sqlite3 lets go of the GIL around every statement it steps, and
    # while another thread runs Python (the engine's writer, during a run) each step waits for
    # it to be handed back. One row a statement, 900,000 corrections were staged in 4.0 s
    # during a run (1.2 s alone); `ROWS_PER_INSERT` rows a statement, in 1.3 s (0.95 s alone).
    one = "(" + ", ".join("?" for _ in names) + ")"
    most = driver.getlimit(SQLITE_LIMIT_VARIABLE_NUMBER) // len(names)
    per = max(1, min(ROWS_PER_INSERT, most))
    full = len(values) // per * per
    cursor = driver.cursor()
    try:
        with _roomier_cache(driver):
            if full:
                statement = f"INSERT INTO {target} ({listed}) VALUES " + ", ".join([one] * per)
                flat = chain.from_iterable
                cursor.executemany(
                    statement, (tuple(flat(values[i : i + per])) for i in range(0, full, per))
                )
            if full < len(values):
                # sqlite3 binds a plain tuple directly, any other sequence (a NamedTuple such
                # as `Correction`) item by item
                rest = list(map(tuple, values[full:]))
                cursor.executemany(f"INSERT INTO {target} ({listed}) VALUES {one}", rest)
    finally:
        cursor.close()


def _encoded(
    rows: Sequence[tuple[Any, ...]], coders: Sequence[tuple[int, Callable[[Any], Any]]]
) -> list[tuple[Any, ...]]:
    """The rows with the values of the columns at these positions encoded, in one pass. A
    value that is the very object last encoded in its column (a batch's one `created_at`) is
    not encoded again: 233,000 quarantined rows formatted their timestamp in 0.5 s."""
    encoded: list[tuple[Any, ...]] = []
    last: list[object] = [_NOTHING] * len(coders)
    made: list[Any] = [None] * len(coders)
    for row in rows:
        items = list(row)
        for k, (position, encode) in enumerate(coders):
            value = items[position]
            if value is None:
                continue
            if value is not last[k]:
                last[k], made[k] = value, encode(value)
            items[position] = made[k]
        encoded.append(tuple(items))
    return encoded


_NOTHING = object()


@contextmanager
def _roomier_cache(driver: Any) -> Iterator[None]:
    """SQLite's page cache at `BULK_CACHE_KIB` at least while a bulk load runs on this
    connection, then as it was. SQLite's default (2 MB) is smaller than the indexes a bulk
    load writes at random places (the quarantined rows' identifiers and customers): their
    pages left the cache and were read back for the next row (233,000 quarantined rows:
    5.6-6.0 s, 4.8-5.0 s with 16 MB; 64 MB was no better)."""
    before = int(driver.execute("PRAGMA cache_size").fetchone()[0])  # < 0: KiB, > 0: pages
    page_kib = int(driver.execute("PRAGMA page_size").fetchone()[0]) / 1024
    if (-before if before < 0 else before * page_kib) >= BULK_CACHE_KIB:
        yield  # an operator's larger cache stays
        return
    driver.execute(f"PRAGMA cache_size={-BULK_CACHE_KIB}")
    try:
        yield
    finally:
        driver.execute(f"PRAGMA cache_size={before}")


# PostgreSQL's binary COPY format around the rows: the signature, no flags, no header
# extension; and the trailer (a field count of -1).
PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
PG_COPY_TRAILER = b"\xff\xff"
_INT4 = (-(2**31), 2**31 - 1)


def pg_copy_rows(columns: Sequence[pa.Array | str | int]) -> pa.Array:
    """Each row of `columns` as PostgreSQL's binary COPY spells it (the number of fields, then
    each field's length and bytes, a length of -1 for NULL), one binary value a row, built by
    Arrow kernels with no Python object per row (a measured hot path: a run's audit, see
    `jobs/store/loads.py`). A column is an integer array (an `int4` column), a string array
    (a text, varchar or json column: their binary forms are the UTF-8 text), or a str or int
    every row shares."""
    if not any(isinstance(column, pa.Array) for column in columns):
        return pa.array([], pa.binary())  # no rows to spell
    parts: list[pa.Array | pa.Scalar] = [_binary_scalar(len(columns).to_bytes(2, "big"))]
    for column in columns:
        if isinstance(column, int):
            parts.append(_binary_scalar(b"\x00\x00\x00\x04" + _int4(np.array([column]))))
        elif isinstance(column, str):
            text = column.encode()
            parts.append(_binary_scalar(len(text).to_bytes(4, "big") + text))
        elif pa.types.is_integer(column.type):
            if column.null_count:
                raise ValueError("an int4 column of a bulk load holds no NULL")
            parts += [_binary_scalar(b"\x00\x00\x00\x04"), _fixed(_int4(column.to_numpy()), 4)]
        else:
            values = column.cast(pa.binary())
            lengths = pc.binary_length(values).fill_null(-1).to_numpy(zero_copy_only=False)
            parts += [_fixed(lengths.astype(">i4").tobytes(), 4), values]
    # nulls joined as nothing (their length already says -1); never `skip`, which drops a row
    # whose every part is null
    nothing = _binary_scalar(b"")
    return pc.binary_join_element_wise(
        *parts, nothing, null_handling="replace", null_replacement=b""
    )


def pg_copy_data(rows: pa.Array) -> pa.Buffer:
    """The bytes of `pg_copy_rows`' rows, one after the other (a slice of its data)."""
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    data = rows.buffers()[2]
    return pa.py_buffer(b"") if data is None else data[int(offsets[0]) : int(offsets[-1])]


def _int4(values: np.ndarray[Any, Any]) -> bytes:
    if len(values) and (values.min() < _INT4[0] or values.max() > _INT4[1]):
        raise ValueError("a value of an int4 column of a bulk load is out of range")
    return values.astype(">i4").tobytes()


def _fixed(data: bytes, width: int) -> pa.Array:
    """`data` cut into values of `width` bytes, as a binary array."""
    count = len(data) // width
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), count, [None, pa.py_buffer(data)]
    )
    return fixed.cast(pa.binary())


def _binary_scalar(value: bytes) -> pa.Scalar:
    return pa.scalar(value, pa.binary())


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# Advisory locks are shared by the whole PostgreSQL cluster: the id is derived from the lock's
# seed and name and from the database and schema, so two meterfix installations (or test runs)
# in different databases or schemas of one server never hold each other's locks.
_LOCK_ID = text(
    "SELECT hashtextextended(current_database() || '.' || current_schema() || :name, :seed)"
)


@contextmanager
def advisory_lock(engine: Engine, seed: int, name: str = "", *, wait: bool) -> Iterator[bool]:
    """One holder at a time across processes: on PostgreSQL a session advisory lock held on a
    connection of its own while the block runs (let go with the connection if the process
    dies). `wait`: wait for it (yields True); else try once and yield whether it was taken.
    On a SQLite file, a file lock beside it (`meterfix poll` beside `meterfix worker` are two
    processes on one file; let go by the system if the process dies too); an in-memory
    database has one process."""
    if not is_postgres(engine):
        path = _sqlite_lock_path(engine, seed, name)
        if path is None:
            yield True
            return
        with _file_lock(path, wait=wait) as held:
            yield held
        return
    with engine.connect() as connection:
        key = {"key": int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())}
        if wait:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            held = True
        else:
            held = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar())
        connection.commit()
        try:
            yield held
        finally:
            if held:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                connection.commit()


def transaction_lock(
    connection: Connection, seed: int, name: str = "", *, shared: bool = False
) -> None:
    """Hold a lock until the caller's transaction ends, for what must not change between a
    check and the write it allows (waiting for a holder). Call it first in the transaction.
    PostgreSQL: a transaction advisory lock, `shared` ones held side by side. SQLite: the
    database's write lock (BEGIN IMMEDIATE: one writer at a time, `shared` or not), taken
    before the transaction reads, so what it reads stays so until it commits."""
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    key = {"key": int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())}
    take = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    connection.execute(text(f"SELECT {take}(:key)"), key)


def _sqlite_lock_path(engine: Engine, seed: int, name: str) -> Path | None:
    """`<database file>.lock-<id>` for a SQLite file; None in memory."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12]
    db_file = Path(database)
    return db_file.with_name(f"{db_file.name}.lock-{digest}")


@contextmanager
def _file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An exclusive `flock` on `path` (kept: removing a lock file races with its next
    holder); whether it was taken. Two opens conflict in one process too."""
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def in_listed(
    column: Any, values: Sequence[str], engine: Engine, name: str = "listed"
) -> ColumnElement[bool]:
    """`column IN values` with one parameter however many values: a JSON list (made an array
    by PostgreSQL, read with `json_each` by SQLite). Rendering a list of 10,000 parameters
    cost more than the query, and so did passing a PostgreSQL array (psycopg quotes its text
    form element by element in Python: 23 ms per 10,000 identifiers against 9 ms with JSON on
    an empty audit, 2.3 s of a first 1M-row run's lineage)."""
    listed_json: BindParameter[str] = bindparam(name, json.dumps(list(values)))
    if is_postgres(engine):
        # made an array once (`ARRAY(SELECT ...)`): the index is searched for its sorted
        # values in one scan (21 ms per 10,000 against 900,000 rows; 28 ms probed one by one)
        listed = select(func.json_array_elements_text(cast(listed_json, JSON)))
        found: ColumnElement[bool] = column == any_(func.array(listed.scalar_subquery()))
        return found
    listed_each = func.json_each(listed_json)
    among: ColumnElement[bool] = column.in_(
        select(literal_column("value")).select_from(listed_each)
    )
    return among


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# The seed of the advisory-lock id `upgrade` holds on PostgreSQL ("mfx_migr").
MIGRATION_LOCK_KEY = 0x6D66785F6D696772


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations shipped inside the package (works from any directory). On
    PostgreSQL one upgrade at a time (two pods' `release` at once): the second reads the
    revision only once the first committed, and finds nothing left to do. On SQLite the
    migrations' `BEGIN IMMEDIATE` (`migration_engine`) does the same."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = make_engine(url)
    try:
        if not url.startswith("postgresql"):
            _require_known_revision(engine)
            command.upgrade(config, revision)
            return
        _require_schema(engine)
        with advisory_lock(engine, MIGRATION_LOCK_KEY, wait=True):
            _require_known_revision(engine)
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _require_known_revision(engine: Engine) -> None:
    """SchemaNewer when the database is at a revision no migration here names: Alembic's own
    "Can't locate revision" said neither why (a newer release upgraded it, and this one was
    deployed after) nor what to do."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    unknown = sorted(set(current) - known)
    if unknown:
        raise SchemaNewer(
            f"the database is at revision {unknown[0]!r}, which this meterfix release does not "
            "know: a newer meterfix release upgraded it; run that release (or newer), or "
            "restore the backup taken before that upgrade"
        )


def _require_schema(engine: Engine) -> None:
    """A clear reason when no schema of the search_path exists (a DATABASE_URL's
    `options=-csearch_path=...` naming one not created): there is nothing to migrate into,
    nor a current schema to derive the upgrade's lock from."""
    with engine.connect() as connection:
        if connection.execute(text("SELECT current_schema()")).scalar() is None:
            path = connection.execute(text("SHOW search_path")).scalar()
            raise ValueError(f"no schema of the search_path ({path}) exists: create it first")


def migration_engine(url: str) -> Engine:
    """The engine migrations run on (`migrations/env.py`): `make_engine`'s, and on SQLite
    every migration in one transaction with foreign keys off (see `_sqlite_migration`)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_migration)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_migration(dbapi_connection: Any, _record: object = None) -> None:
    """sqlite3 opens a transaction before INSERT, UPDATE and DELETE only: each CREATE, DROP
    and ALTER of a migration committed at once, so a migration stopped midway (a full disk)
    left its `_alembic_tmp_<table>` behind and every later upgrade failed on it. Driver
    autocommit here, and `_sqlite_begin` opens the transaction itself. Foreign keys off
    (outside any transaction, where SQLite honours the pragma): rebuilding a table in batch
    mode drops the old one, and with foreign keys on that deleted, by ON DELETE CASCADE,
    every row that pointed at it (0003 emptied the audit, outputs and quarantine)."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE: a second upgrade waits here (busy timeout) and then reads the new revision
    connection.exec_driver_sql("BEGIN IMMEDIATE")
