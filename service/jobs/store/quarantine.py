"""Quarantined rows and the quarantine filter's conditions (code, meter, customer, runs, time,
re-runs' or not; each on an index): the lists, counts and groups the pages, digests, run
alerts and /metrics read, and their retention. Rows a re-run took (`rerun_id` set) are
replaced by that re-run's own rows, so filtered lists leave them out unless they ask for runs'
rows (`run`, `rerun`). The filter itself is `quarantine_filter.py`; what a quarantine re-run
counts, reads and marks is `rerun_queue.py`, `rerun_rows.py`, `other_takes.py` and
`rerun_takes.py`; the marks of rows their object sent again since (`taken_again`) are
`taken_again.py`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, func, select

from service.db.pages import Listing, Page, keyset
from service.db.statements import delete_batch_in
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.run_counts import new_input_finished_between
from service.jobs.store.runs import RUNS
from service.models._types import table_of
from service.models.remediation import (
    QuarantinedRow,
    RunTrigger,
)

QUARANTINE = table_of(QuarantinedRow)
ID_BATCH = 500  # ids per IN (...) list


def quarantine_conditions(found: QuarantineFilter) -> list[ColumnElement[bool]]:
    table = QUARANTINE.c
    where: list[ColumnElement[bool]] = []
    if found.code is not None:
        where.append(table.code == found.code)
    if found.meter is not None:
        where.append(table.meter == found.meter)
    if found.customer is not None:
        where.append(table.customer == found.customer)
    if found.run:
        where.append(table.run_id.in_(found.run))
    elif found.rerun is None:
        where.append(table.rerun_id.is_(None))
    if found.rerun is not None:
        where.append(_of_reruns(found.rerun))
    if found.since is not None:
        where.append(table.created_at >= found.since)
    if found.until is not None:
        where.append(table.created_at <= found.until)
    if found.taken_again is not None:
        marked = table.taken_again
        where.append(marked.is_not(None) if found.taken_again else marked.is_(None))
    return where


def _of_reruns(reruns: bool) -> ColumnElement[bool]:
    """The rows quarantined by quarantine re-runs (or by any other run): all they quarantined,
    those a later re-run took too, as `run=` lists a run's rows, so a digest's link past
    `MAX_LINK_RUNS` runs opens the rows its line counts (the run ids by trigger, then the
    run index)."""
    trigger = RUNS.c.trigger == RunTrigger.QUARANTINE_RERUN.value
    of_reruns = QUARANTINE.c.run_id.in_(select(RUNS.c.id).where(trigger))
    return of_reruns if reruns else ~of_reruns


def list_quarantine(connection: Connection, found: QuarantineFilter, page: Page) -> Listing:
    query = select(QUARANTINE).where(*quarantine_conditions(found))
    return keyset(connection, query, QUARANTINE.c.id, page)


def count_all_quarantined(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(QUARANTINE)).scalar_one())


class QuarantineSpread(NamedTuple):
    """What a run's quarantined rows are: their codes with their rows (the most rows first,
    then by name), how many meters and customers they name (none counts as one), and the
    meter and customer every row shares (None when they differ)."""

    codes: list[tuple[str, int]]
    meters: int
    customers: int
    meter: str | None
    customer: str | None

    @property
    def code(self) -> str | None:
        """The code every row shares (None when they differ, or with no rows)."""
        return self.codes[0][0] if len(self.codes) == 1 else None


def quarantine_spread(connection: Connection, run_id: int) -> QuarantineSpread:
    """`QuarantineSpread` of the run `run_id`'s quarantined rows (two queries by the run
    index). A run's alert names a code, meter or customer only when all its rows share it:
    the largest group named beside the run's total said all its rows were that."""
    table = QUARANTINE.c
    rows = func.count().label("rows")
    by_code = select(table.code, rows).where(table.run_id == run_id).group_by(table.code)
    codes = sorted(
        ((str(r.code), int(r.rows)) for r in connection.execute(by_code)),
        key=lambda item: (-item[1], item[0]),
    )
    names = select(
        func.count(),
        func.count(table.meter),
        func.count(table.meter.distinct()),
        func.min(table.meter),
        func.count(table.customer),
        func.count(table.customer.distinct()),
        func.min(table.customer),
    ).where(table.run_id == run_id)
    found = connection.execute(names).one()
    total, metered, meters, named, customers = (int(found[i]) for i in (0, 1, 2, 4, 5))
    meter, customer = found[3], found[6]
    return QuarantineSpread(
        codes,
        meters + (metered < total),
        customers + (named < total),
        str(meter) if meters == 1 and metered == total else None,
        str(customer) if customers == 1 and named == total else None,
    )


def _quarantined_by_runs_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    """The rows of the new input finished in [start, end): a digest counts re-runs apart."""
    return QUARANTINE.c.run_id.in_(select(RUNS.c.id).where(new_input_finished_between(start, end)))


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


def quarantine_group_totals(
    connection: Connection, start: datetime, end: datetime, *, customers: bool
) -> tuple[int, int]:
    """(groups, rows) of `quarantine_groups` without a limit: what its lines leave out."""
    keys = [QUARANTINE.c.code, QUARANTINE.c.meter] + ([QUARANTINE.c.customer] if customers else [])
    grouped = (
        select(*keys, func.count().label("rows"))
        .where(_quarantined_by_runs_between(start, end))
        .group_by(*keys)
        .subquery()
    )
    found = connection.execute(
        select(func.count(), func.coalesce(func.sum(grouped.c.rows), 0))
    ).one()
    return int(found[0]), int(found[1])


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


def purge_quarantined(connection: Connection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` quarantined rows of runs finished before the cutoff,
    or quarantined before it; but not a row a re-run took while that re-run, or one that
    took the rows it quarantined again, to the end of the chain, is kept (`_chains_kept`),
    and never a row without a timestamp (`_dated`). In the caller's transaction."""
    old_runs = select(RUNS.c.id).where(RUNS.c.finished_at < before)
    old = (QUARANTINE.c.run_id.in_(old_runs) | (QUARANTINE.c.created_at < before)) & _dated()
    # a few ids, looked up first (SQLite counts no rows a WITH deletes)
    found: Sequence[Any] = connection.execute(select(_chains_kept(before))).scalars().all()
    kept = sorted(int(i) for i in found)
    taken = QUARANTINE.c.rerun_id
    where = old & (taken.is_(None) | taken.not_in(kept)) if kept else old
    return delete_batch_in(connection, QUARANTINE, where, batch)


def _dated() -> ColumnElement[bool]:
    """Rows with a timestamp. Retention purges rows old enough that Stripe takes them no
    more (35 days); a row without one has no age: Stripe bills it at the time it arrives,
    whenever that is. Purged, its entry was how the poller knew Stripe had refused it (sent
    from a version fixed by hand months later, it was left out as billed: usage lost) and
    how a re-run that took it is found (sent as it is beside the re-run's `x-mfx1`)."""
    stamp = QUARANTINE.c.record["timestamp"].as_string()
    return func.coalesce(func.trim(stamp), "") != ""


def _chains_kept(before: datetime) -> Any:
    """The re-runs the purge keeps (finished since `before`, or not finished), and the
    re-runs whose rows they took, back to the first: a row a re-run took is how the re-run
    is found (`runs.runs_correcting`: a row it corrected or re-sent is never sent again from
    a version fixed by hand), and how a row it quarantined again is traced back to its object
    (`rerun_origins`). Purged with the first run while the re-run was kept, the row it sent
    was sent again, under its own identifier, from the file fixed by hand: billed twice.
    (The run rows themselves are never purged.)"""
    runs = RUNS.c
    live = (runs.finished_at.is_(None)) | (runs.finished_at >= before)
    kept = (
        select(runs.id)
        .where(runs.trigger == RunTrigger.QUARANTINE_RERUN.value, live)
        .cte("kept_reruns", recursive=True)
    )
    taken_by = select(QUARANTINE.c.run_id).join(kept, QUARANTINE.c.rerun_id == kept.c.id)
    return kept.union(taken_by)
