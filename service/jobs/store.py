"""The jobs' store: every query over what remediation writes (runs, their outputs, the
correction audit, quarantined rows) and over import sets and error reports. The dashboard,
the admin API, the digests and /metrics read these aggregates through this module only.

Rows come back as plain mappings (or small tuples); turning them into JSON or messages is the
reader's business. Quarantined rows a re-run took (`rerun_id` set) are replaced by that
re-run's own rows, so filtered lists leave them out unless they ask for one run's rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    and_,
    cast,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)

from service.db import Listing, Page, delete_batch, keyset
from service.errors import BadParameter
from service.models import RunStatus
from service.models._types import table_of
from service.models.alerts import AdminAction
from service.models.remediation import (
    CorrectionAudit,
    OutputObject,
    QuarantinedRow,
    RemediationRun,
)
from service.models.reports import ErrorReport, ImportSet

RUNS = table_of(RemediationRun)
OUTPUTS = table_of(OutputObject)
QUARANTINE = table_of(QuarantinedRow)
AUDIT = table_of(CorrectionAudit)
IMPORT_SETS = table_of(ImportSet)
REPORTS = table_of(ErrorReport)
ACTIONS = table_of(AdminAction)
MAX_FILTER_CHARS = 255
ID_BATCH = 500  # ids per IN (...) list
REPORT_PREFIX = "error_report:"


# --- the quarantine filter -----------------------------------------------------------------


@dataclass(frozen=True)
class QuarantineFilter:
    """Which quarantined rows: by code, meter, customer, run and time (each on an index)."""

    code: str | None = None
    meter: str | None = None
    customer: str | None = None
    run: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for links, CSV and the re-run's record)."""
        values = {
            "code": self.code,
            "meter": self.meter,
            "customer": self.customer,
            "run": None if self.run is None else str(self.run),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> QuarantineFilter:
        """The filter from query parameters (a request's, or those a re-run kept); a bad
        one is a `BadParameter` with the reason."""
        run = args.get("run", "")
        found = cls(
            code=_text(args, "code"),
            meter=_text(args, "meter"),
            customer=_text(args, "customer"),
            run=positive_int(args, "run", 0) if run != "" else None,
            since=_time(args, "since"),
            until=_time(args, "until"),
        )
        if found.since and found.until and found.since > found.until:
            raise BadParameter("since must not be after until")
        return found


def positive_int(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name, "")
    if raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) <= 0:
        raise BadParameter(f"{name} must be a positive whole number, not {raw[:40]!r}")
    return int(raw)


def _text(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise BadParameter(f"{name} is longer than {MAX_FILTER_CHARS} characters")
    return value or None


def _time(args: Mapping[str, str], name: str) -> datetime | None:
    """ISO-8601 date or date-time; without a zone it is UTC."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
    except ValueError:
        raise BadParameter(f"{name} must be an ISO-8601 date or time, not {raw[:40]!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def quarantine_conditions(found: QuarantineFilter) -> list[ColumnElement[bool]]:
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


def rerun_filters(connection: Connection, action_id: int) -> Any:
    """The filter kept on the admin action that queued a quarantine re-run (its `filters`
    detail), or None when the action is gone. The dashboard and the API record the action
    (`service.web.store`); the re-run task reads its input here."""
    detail = connection.execute(select(ACTIONS.c.detail).where(ACTIONS.c.id == action_id)).scalar()
    return detail.get("filters") if isinstance(detail, dict) else None


# --- quarantined rows ----------------------------------------------------------------------


class QuarantinedEntry(NamedTuple):
    identifier: str | None
    source: str | None
    row_number: int | None
    code: str | None
    record: Any


def list_quarantine(connection: Connection, found: QuarantineFilter, page: Page) -> Listing:
    query = select(QUARANTINE).where(*quarantine_conditions(found))
    return keyset(connection, query, QUARANTINE.c.id, page)


def count_quarantine(connection: Connection, found: QuarantineFilter) -> int:
    query = select(func.count()).select_from(QUARANTINE).where(*quarantine_conditions(found))
    return int(connection.execute(query).scalar_one())


def count_all_quarantined(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(QUARANTINE)).scalar_one())


def rows_to_rerun(
    connection: Connection, found: QuarantineFilter, run_key: str
) -> tuple[list[int], int]:
    """The ids (oldest first) of the rows the filter picks for the re-run `run_key`, never
    that re-run's own rows nor rows another re-run took, and the highest generation of the
    runs that quarantined them (1 when none)."""
    own = select(RUNS.c.id).where(RUNS.c.run_key == run_key).scalar_subquery()
    where = [*quarantine_conditions(found), QUARANTINE.c.rerun_id.is_(None)]
    ids = [
        int(row[0])
        for row in connection.execute(
            select(QUARANTINE.c.id)
            .where(*where, QUARANTINE.c.run_id != func.coalesce(own, -1))
            .order_by(QUARANTINE.c.id)
        )
    ]
    generation = connection.execute(
        select(func.max(RUNS.c.generation))
        .select_from(QUARANTINE.join(RUNS, RUNS.c.id == QUARANTINE.c.run_id))
        .where(*where)
    ).scalar()
    return ids, int(generation or 1)


def quarantined_entries(engine: Engine, ids: Sequence[int]) -> Iterator[QuarantinedEntry]:
    """The rows with these ids, in id order, one short query per batch."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    QUARANTINE.c.identifier,
                    QUARANTINE.c.source,
                    QUARANTINE.c.row_number,
                    QUARANTINE.c.code,
                    QUARANTINE.c.record,
                )
                .where(QUARANTINE.c.id.in_(chunk))
                .order_by(QUARANTINE.c.id)
            ).all()
        for row in rows:
            yield QuarantinedEntry(row.identifier, row.source, row.row_number, row.code, row.record)


def mark_rerun(engine: Engine, ids: Sequence[int], run_id: int) -> None:
    """The rows with these ids were taken by the re-run `run_id` (one transaction)."""
    chunks = iter(ids)
    with engine.begin() as connection:
        while chunk := list(islice(chunks, ID_BATCH)):
            connection.execute(
                update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(rerun_id=run_id)
            )


def top_quarantine_group(engine: Engine, run_id: int) -> tuple[str | None, str | None, str | None]:
    """The code, meter and customer with the most quarantined rows in the run."""
    keys = (QUARANTINE.c.code, QUARANTINE.c.meter, QUARANTINE.c.customer)
    rows = func.count().label("rows")
    with engine.connect() as connection:
        top = connection.execute(
            select(*keys, rows)
            .where(QUARANTINE.c.run_id == run_id)
            .group_by(*keys)
            .order_by(rows.desc())
            .limit(1)
        ).first()
    return (top[0], top[1], top[2]) if top is not None else (None, None, None)


def _finished_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    return (
        (RUNS.c.status == RunStatus.DONE)
        & (RUNS.c.finished_at >= start)
        & (RUNS.c.finished_at < end)
    )


def _quarantined_by_runs_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    return QUARANTINE.c.run_id.in_(select(RUNS.c.id).where(_finished_between(start, end)))


def quarantine_groups(
    connection: Connection, start: datetime, end: datetime, *, customers: bool, limit: int
) -> list[tuple[str, str | None, str | None, int]]:
    """(code, meter, customer or None, rows) of the runs finished in [start, end), most rows
    first; grouped by customer too only when `customers`."""
    keys = [QUARANTINE.c.code, QUARANTINE.c.meter] + ([QUARANTINE.c.customer] if customers else [])
    rows = func.count().label("rows")
    statement = (
        select(*keys, rows)
        .where(_quarantined_by_runs_between(start, end))
        .group_by(*keys)
        .order_by(rows.desc(), *keys)
        .limit(limit)
    )
    return [
        (row[0], row[1], row[2] if customers else None, int(row.rows))
        for row in connection.execute(statement)
    ]


def quarantine_reasons(
    connection: Connection, start: datetime, end: datetime, *, reasons: bool, limit: int
) -> list[tuple[str, str | None, int, int]]:
    """(code, reason or None, rows, id of the first row) of the runs finished in [start, end),
    most rows first; grouped by reason too only when `reasons`."""
    keys = [QUARANTINE.c.code] + ([QUARANTINE.c.reason] if reasons else [])
    rows = func.count().label("rows")
    first = func.min(QUARANTINE.c.id).label("first")
    statement = (
        select(*keys, rows, first)
        .where(_quarantined_by_runs_between(start, end))
        .group_by(*keys)
        .order_by(rows.desc(), *keys)
        .limit(limit)
    )
    return [
        (row[0], str(row[1]) if reasons else None, int(row.rows), int(row.first))
        for row in connection.execute(statement)
    ]


def quarantined_record(connection: Connection, row_id: int) -> Any:
    return connection.execute(select(QUARANTINE.c.record).where(QUARANTINE.c.id == row_id)).scalar()


def purge_audit(engine: Engine, runs_finished_before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` audit rows of runs finished before the cutoff (the
    runs themselves stay, with their counts and outputs: lineage)."""
    old_runs = select(RUNS.c.id).where(RUNS.c.finished_at < runs_finished_before)
    return delete_batch(engine, AUDIT, AUDIT.c.run_id.in_(old_runs), batch)


def purge_quarantined(engine: Engine, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` quarantined rows of runs finished before the cutoff,
    or quarantined before it."""
    old_runs = select(RUNS.c.id).where(RUNS.c.finished_at < before)
    where = QUARANTINE.c.run_id.in_(old_runs) | (QUARANTINE.c.created_at < before)
    return delete_batch(engine, QUARANTINE, where, batch)


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
    rows = connection.execute(select(*columns, RUNS.c.by_code).where(_finished_between(start, end)))
    return [(int(row[0]), int(row[1]), int(row[2]), int(row[3]), row[4]) for row in rows]


def top_runs_finished_between(
    connection: Connection, start: datetime, end: datetime, limit: int
) -> list[dict[str, Any]]:
    """The runs finished in [start, end) that quarantined most, latest first among equals."""
    statement = (
        select(RUNS)
        .where(_finished_between(start, end))
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


# --- import sets and error reports ---------------------------------------------------------


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
