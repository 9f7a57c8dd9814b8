"""Import sets (Stripe's and the poller's) and meter error reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Connection,
    select,
)

from service.db import Listing, Page, keyset
from service.models._types import table_of
from service.models.reports import ErrorReport, ImportSet

IMPORT_SETS = table_of(ImportSet)
REPORTS = table_of(ErrorReport)


def list_import_sets(connection: Connection, page: Page) -> Listing:
    return keyset(connection, select(IMPORT_SETS), IMPORT_SETS.c.id, page)


def get_import_set(connection: Connection, import_set_id: str) -> dict[str, Any] | None:
    row = connection.execute(
        select(IMPORT_SETS).where(IMPORT_SETS.c.import_set_id == import_set_id)
    ).first()
    return None if row is None else dict(row._mapping)


def list_reports(connection: Connection, page: Page) -> Listing:
    return keyset(connection, select(REPORTS), REPORTS.c.id, page)


def get_report(connection: Connection, event_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(REPORTS).where(REPORTS.c.event_id == event_id)).first()
    return None if row is None else dict(row._mapping)
