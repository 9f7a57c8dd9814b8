"""Bulk loading of many rows in one transaction (PostgreSQL `COPY`, SQLite multi-row
INSERTs through the driver) and PostgreSQL's binary COPY format built by Arrow kernels. Apart
from the engine: a measured hot path (a run's audit and quarantined rows,
`jobs/store/loads.py`) that alone needs numpy and pyarrow."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from sqlite3 import SQLITE_LIMIT_VARIABLE_NUMBER
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Dialect, Table

# Rows per INSERT statement in a SQLite bulk load (`bulk_load_rows`), parameter limit allowing.
ROWS_PER_INSERT = 256
# SQLite's page cache while a bulk load runs (`_roomier_cache`), in KiB.
BULK_CACHE_KIB = 16_384


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
    values = _encoded_values(dialect, table, names, rows, as_stored)
    target, listed = _quoted_target(dialect, table, names)
    driver: Any = connection.connection.driver_connection
    if dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {target} ({listed}) FROM STDIN") as copy:
            for value in values:
                copy.write_row(value)
        return
    _insert_many_a_statement(driver, target, listed, names, values)


def _encoded_values(
    dialect: Dialect,
    table: Table,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    as_stored: Collection[str],
) -> Sequence[tuple[Any, ...]]:
    """The rows with each value encoded by its column's type, but those of `as_stored`."""
    columns = [table.c[name] for name in names]
    coders = [  # only columns whose type encodes (JSON, times)
        (position, encode)
        for position, column in enumerate(columns)
        if column.name not in as_stored
        and (encode := column.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    ]
    return _encoded(rows, coders) if coders else rows


def _quoted_target(dialect: Dialect, table: Table, names: Sequence[str]) -> tuple[str, str]:
    """The table and its columns `names` (comma-separated), quoted for a raw statement."""
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    listed = ", ".join(quote(name) for name in names)
    return target, listed


def _insert_many_a_statement(
    driver: Any, target: str, listed: str, names: Sequence[str], values: Sequence[tuple[Any, ...]]
) -> None:
    """SQLite's bulk load: `values` inserted into `target`'s columns `listed`."""
    # Many rows a statement: sqlite3 lets go of the GIL around every statement it steps, and
    # while another thread runs Python (the engine's writer, during a run) each step waits for
    # it to be handed back. One row a statement, 900,000 corrections were staged in 4.0 s
    # during a run (1.2 s alone); `ROWS_PER_INSERT` rows a statement, in 1.3 s (0.95 s alone).
    one = "(" + ", ".join("?" for _ in names) + ")"
    per = _rows_per_insert(driver, len(names))
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


def _rows_per_insert(driver: Any, width: int) -> int:
    """`ROWS_PER_INSERT`, or fewer when SQLite's parameter limit cannot bind that many rows of
    `width` columns (at least one)."""
    most: int = driver.getlimit(SQLITE_LIMIT_VARIABLE_NUMBER) // width
    return max(1, min(ROWS_PER_INSERT, most))


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
