"""Quarantined rows as the dashboard and the API show them: filtered by code, meter,
customer, run and date (the query is the jobs' store's), newest first, as JSON; streamed in
batches for the CSV download.

Rows a re-run took (`rerun_id` set) are replaced by that re-run's own rows, so lists leave
them out, unless they ask for runs' rows (`run=`, one run or several; `rerun=yes|no`, the rows
of quarantine re-runs or of every other run): a run's page shows all it quarantined.
Rows Stripe's connector took again from a later version of their object (`taken_again`, index
mode) stay listed, with that version named: a re-run leaves them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Engine

from remediation import jsonnumbers
from service.db.pages import Listing, Page
from service.jobs.store import quarantine as quarantine_store
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.web.store import iso

STREAM_BATCH = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
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
    "taken_again",
)


def list_quarantine(engine: Engine, found: QuarantineFilter, page: Page) -> Listing:
    with engine.connect() as connection:
        listing = quarantine_store.list_quarantine(connection, found, page)
    return Listing([row_json(row) for row in listing.data], listing.next_cursor)


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
        "taken_again": row["taken_again"],
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
        return jsonnumbers.dumps_as(record, (", ", ": "), sort_keys=True)
    if column == "payload":  # as it came: a payload of the wrong shape is no `{}`
        return jsonnumbers.dumps_as(record.get("payload", {}), (", ", ": "))
    if column in ("timestamp", "event_name"):
        value = record.get(column)  # as it came: a JSON value as JSON, never Python's text
        text = value if isinstance(value, str) or value is None else _json_text(value)
    else:
        text = row.get(column)
    text = "" if text is None else str(text)
    # Row contents come from usage files: a cell a spreadsheet would run as a formula gets a
    # leading quote (the `record` column keeps the row exactly).
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _json_text(value: object) -> str:
    return jsonnumbers.dumps_as(value, (", ", ": "))


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
