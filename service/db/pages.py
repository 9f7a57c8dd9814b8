"""Keyset pagination, the one way every store's lists page (the admin API and the pages
read a `Listing`), and the bounds of a page's cursor. Apart from the engine: only the stores
and the web's parameters use it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select

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
