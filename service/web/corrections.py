"""A run's corrections as the dashboard and the API list them: its `correction_audit` rows
(one per change to one row), filtered by code, rule, field and identifier, in pages.

The order is the one index of a run's rows gives, (run_id, identifier) (migration 0004; no
other index is added: each is written by every run's load, and the load is the service path's
slowest stage): by identifier, then by id (on SQLite the index holds the id; on PostgreSQL the
few rows under one identifier are sorted), rows without an identifier last, by id. A page's
cursor is the id of the last row it read, whose identifier the next page starts from. On
PostgreSQL the first page of a run's rows without an identifier (a file that had none), and a
filtered page among them, sort the ones left: 10,000 take milliseconds, 200,000 about 170 ms.

A filter on code, rule or field is not indexed: the run's rows are read in order and the ones
that match kept. So that a page stays quick in a run of a million corrections where few match,
a page reads at most `SCAN_ROWS` of them: it may hold fewer than its limit (none, even) and
still have a next page, and the list ends when `next_cursor` is null."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, Select, and_, or_, select

from service.db.pages import Listing, Page
from service.errors import BadParameter, NotFound
from service.jobs.store.runs import AUDIT, RUNS

# Rows of the run a filtered page reads at most: in a run of a million corrections, a page of a
# rare code took 66 ms (p95) on SQLite and 87 ms on PostgreSQL, on a loaded host (bench/pages.py).
SCAN_ROWS = 20_000
ITEM_COLUMNS = (
    AUDIT.c.id,
    AUDIT.c.row_number,
    AUDIT.c.identifier,
    AUDIT.c.new_identifier,
    AUDIT.c.code,
    AUDIT.c.rule,
    AUDIT.c.field,
    AUDIT.c.before,
    AUDIT.c.after,
)


@dataclass(frozen=True)
class CorrectionFilter:
    """Which of a run's corrections: by the code the row arrived with, the rule that changed
    it, the field changed and the row's identifier (None: any)."""

    code: str | None = None
    rule: str | None = None
    field: str | None = None
    identifier: str | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (the page's links and form)."""
        values = {
            "code": self.code,
            "rule": self.rule,
            "field": self.field,
            "identifier": self.identifier,
        }
        return {name: value for name, value in values.items() if value is not None}

    def scanned(self) -> bool:
        """Whether the filter is read from the rows, not from the index."""
        return any(value is not None for value in (self.code, self.rule, self.field))


def list_corrections(engine: Engine, run_id: int, found: CorrectionFilter, page: Page) -> Listing:
    """A page of the run's corrections `found` selects (a run that does not exist is a
    `NotFound`; a cursor that is no row of the run a `BadParameter`)."""
    with engine.connect() as connection:
        if connection.execute(select(RUNS.c.id).where(RUNS.c.id == run_id)).first() is None:
            raise NotFound(f"no run with id {run_id}")
        after = _cursor_row(connection, run_id, page.cursor)
        rows, read_last = _read(connection, run_id, found, page, after)
    data = [item_json(row) for row in rows[: page.limit]]
    if len(rows) > page.limit:
        return Listing(data, str(data[-1]["id"]))
    return Listing(data, None if read_last is None else str(read_last))


def item_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "row": row["row_number"],
        "identifier": row["identifier"],
        "new_identifier": row["new_identifier"],
        "code": row["code"],
        "rule": row["rule"],
        "field": row["field"],
        "before": row["before"],
        "after": row["after"],
    }


@dataclass(frozen=True)
class _After:
    """Where a page starts: after the row of this id, which has this identifier."""

    id: int
    identifier: str | None


@dataclass(frozen=True)
class _Segment:
    """Rows of the run read by one indexed query, in the list's order."""

    where: ColumnElement[bool]
    order: tuple[ColumnElement[Any], ...]

    def query(self, *columns: ColumnElement[Any]) -> Select[Any]:
        return select(*columns).where(self.where).order_by(*self.order)

    def through(self, last: Row[Any]) -> ColumnElement[bool]:
        """This segment's rows up to `last` (one of them), in its order (rows without an
        identifier: by id, whichever order the segment names)."""
        if len(self.order) == 1 or last.identifier is None:
            return AUDIT.c.id <= int(last.id)
        return and_(
            AUDIT.c.identifier <= last.identifier,
            or_(AUDIT.c.identifier < last.identifier, AUDIT.c.id <= last.id),
        )


def _cursor_row(connection: Connection, run_id: int, cursor: int | None) -> _After | None:
    if cursor is None:
        return None
    row = connection.execute(
        select(AUDIT.c.run_id, AUDIT.c.identifier).where(AUDIT.c.id == cursor)
    ).first()
    if row is None or row.run_id != run_id:
        raise BadParameter(f"cursor {cursor} is no correction of run {run_id}")
    return _After(cursor, row.identifier)


def _read(
    connection: Connection, run_id: int, found: CorrectionFilter, page: Page, after: _After | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to `limit + 1` matching rows after `after`, and, when a filtered page read
    `SCAN_ROWS` rows of a segment without finding them all, the id of the last row it read
    (the next page starts after it)."""
    rows: list[dict[str, Any]] = []
    for segment in _segments(run_id, found, after):
        wanted = page.limit + 1 - len(rows)
        last = _scan_end(connection, segment) if found.scanned() else None
        query = segment.query(*ITEM_COLUMNS).where(*_conditions(found)).limit(wanted)
        if last is not None:
            query = query.where(segment.through(last))
        rows += [dict(row._mapping) for row in connection.execute(query).all()]
        if len(rows) > page.limit:
            break
        if last is not None:
            return rows, int(last.id)
    return rows, None


def _scan_end(connection: Connection, segment: _Segment) -> Row[Any] | None:
    """The `SCAN_ROWS`th row of the segment (None: it holds fewer): a filtered page reads up
    to it (read from the index alone on SQLite)."""
    query = segment.query(AUDIT.c.id, AUDIT.c.identifier).offset(SCAN_ROWS - 1).limit(1)
    return connection.execute(query).first()


def _conditions(found: CorrectionFilter) -> list[ColumnElement[bool]]:
    """The filter's unindexed parts."""
    wanted = {AUDIT.c.code: found.code, AUDIT.c.rule: found.rule, AUDIT.c.field: found.field}
    return [column == value for column, value in wanted.items() if value is not None]


def _segments(run_id: int, found: CorrectionFilter, after: _After | None) -> list[_Segment]:
    """The run's rows after `after` in the list's order, as the indexed queries that read
    them: those with an identifier (by identifier, then id), then those without (by id: the
    first page of them read as by identifier then id, all NULL, so that PostgreSQL reads the
    run's index, not every row's id from the first)."""
    run = AUDIT.c.run_id == run_id
    if found.identifier is not None:
        run = and_(run, AUDIT.c.identifier == found.identifier)
    by_identifier = (AUDIT.c.identifier, AUDIT.c.id)
    unnamed = and_(run, AUDIT.c.identifier.is_(None))
    if after is not None and after.identifier is None:
        return [_Segment(and_(unnamed, AUDIT.c.id > after.id), (AUDIT.c.id,))]
    named = and_(run, AUDIT.c.identifier.is_not(None))
    if after is not None:
        past = or_(AUDIT.c.identifier > after.identifier, AUDIT.c.id > after.id)
        named = and_(run, AUDIT.c.identifier >= after.identifier, past)
    segments = [_Segment(named, by_identifier)]
    if found.identifier is None:
        segments.append(_Segment(unnamed, by_identifier))
    return segments
