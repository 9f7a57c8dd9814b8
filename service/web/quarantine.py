"""Quarantined rows: filtered by code, meter, customer, run and date (each on an index),
newest first; streamed in batches for CSV and for the re-run task.

Rows a re-run took (`rerun_id` set) are replaced by that re-run's own rows, so lists leave
them out, unless they ask for one run's rows (`run=`): a run's page shows all it quarantined.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from service.models._types import table_of
from service.models.remediation import QuarantinedRow
from service.web.params import Page, QuarantineFilter
from service.web.store import Listing, iso, keyset

QUARANTINE = table_of(QuarantinedRow)
STREAM_BATCH = 1000
FORMULA_STARTS = ("=", "+", "@", "\t", "\r")
CSV_COLUMNS = (
    "id",
    "created_at",
    "run_id",
    "source",
    "row_number",
    "code",
    "mfx_code",
    "reason",
    "meter",
    "customer",
    "identifier",
    "timestamp",
    "event_name",
    "payload",
    "record",
    "rerun_id",
)


def conditions(found: QuarantineFilter) -> list[ColumnElement[bool]]:
    table = QUARANTINE.c
    where: list[ColumnElement[bool]] = []
    if found.code is not None:
        where.append(table.code == found.code)
    if found.meter is not None:
        where.append(table.meter == found.meter)
    if found.customer is not None:
        where.append(table.customer == found.customer)
    if found.run is not None:
        where.append(table.run_id == found.run)
    else:
        where.append(table.rerun_id.is_(None))
    if found.since is not None:
        where.append(table.created_at >= found.since)
    if found.until is not None:
        where.append(table.created_at <= found.until)
    return where


def list_quarantine(engine: Engine, found: QuarantineFilter, page: Page) -> Listing:
    query = select(QUARANTINE).where(*conditions(found))
    with engine.connect() as connection:
        listing = keyset(connection, query, QUARANTINE.c.id, page)
    return Listing([row_json(row) for row in listing.data], listing.next_cursor)


def count_quarantine(connection: Connection, found: QuarantineFilter) -> int:
    query = select(func.count()).select_from(QUARANTINE).where(*conditions(found))
    return int(connection.execute(query).scalar_one())


def row_json(row: Mapping[str, Any]) -> dict[str, Any]:
    record = row["record"] if isinstance(row["record"], Mapping) else {}
    return {
        "id": row["id"],
        "run_id": row["run_id"],
        "source": row["source"],
        "row_number": row["row_number"],
        "identifier": row["identifier"],
        "code": row["code"],
        "mfx_code": record.get("mfx_code"),
        "reason": row["reason"],
        "meter": row["meter"],
        "customer": row["customer"],
        "created_at": iso(row["created_at"]),
        "rerun_id": row["rerun_id"],
        "record": record,
    }


def iter_rows(engine: Engine, found: QuarantineFilter) -> Iterator[dict[str, Any]]:
    """Every matching row, newest first, a batch (one short query) at a time."""
    cursor: int | None = None
    while True:
        listing = list_quarantine(engine, found, Page(STREAM_BATCH, cursor))
        yield from listing.data
        if listing.next_cursor is None:
            return
        cursor = int(listing.next_cursor)


def csv_lines(engine: Engine, found: QuarantineFilter) -> Iterator[str]:
    """The CSV download: a header, then one line per row (payload and record as JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in iter_rows(engine, found):
        record = row["record"]
        writer.writerow([_cell(row, record, column) for column in CSV_COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield _drain(buffer)
    yield _drain(buffer)


def _cell(row: Mapping[str, Any], record: Mapping[str, Any], column: str) -> str:
    if column == "record":
        return json.dumps(record, ensure_ascii=False, sort_keys=True)
    if column == "payload":
        return json.dumps(record.get("payload") or {}, ensure_ascii=False)
    value = record.get(column) if column in ("timestamp", "event_name") else row.get(column)
    text = "" if value is None else str(value)
    # Row contents come from usage files: a cell a spreadsheet would run as a formula gets a
    # leading quote (the `record` column keeps the row exactly).
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
