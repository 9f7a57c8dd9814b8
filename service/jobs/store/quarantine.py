"""Quarantined rows and the quarantine filter (code, meter, customer, runs, time; each on an
index). Rows a re-run took (`rerun_id` set) are replaced by that re-run's own rows, so
filtered lists leave them out unless they ask for runs' rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    func,
    select,
    update,
)

from service.db import (
    MAX_ROW_ID,
    Listing,
    Page,
    delete_batch_in,
    in_listed,
    keyset,
    transaction_lock,
)
from service.errors import BadParameter
from service.jobs.store.runs import RUNS, finished_between
from service.models._types import as_utc, table_of
from service.models.alerts import AdminAction
from service.models.remediation import (
    QuarantinedRow,
    RunTrigger,
)

QUARANTINE = table_of(QuarantinedRow)
ACTIONS = table_of(AdminAction)
MAX_FILTER_CHARS = 255
MAX_FILTER_RUNS = 100  # runs one filter may name (a digest link names up to 20)
ID_BATCH = 500  # ids per IN (...) list


# --- the quarantine filter -----------------------------------------------------------------


@dataclass(frozen=True)
class QuarantineFilter:
    """Which quarantined rows: by code, meter, customer, runs (the rows of any of them; none:
    every run's) and time (each on an index), and whether their object sent them again since
    (`taken_again`: yes/no; not indexed, few rows are marked: a page of unmarked rows reads
    about a page of rows)."""

    code: str | None = None
    meter: str | None = None
    customer: str | None = None
    run: tuple[int, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    taken_again: bool | None = None

    def as_query(self) -> dict[str, str]:
        """The filter as query parameters (for links, CSV and the re-run's record): one value
        each, runs as `3,7` (read back by `from_query`, as a single run kept before was)."""
        values = {
            "code": self.code,
            "meter": self.meter,
            "customer": self.customer,
            "run": ",".join(str(run) for run in self.run) or None,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "taken_again": None if self.taken_again is None else YES_NO[self.taken_again],
        }
        return {key: value for key, value in values.items() if value is not None}

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> QuarantineFilter:
        """The filter from query parameters (a request's, or those a re-run kept); a bad
        one is a `BadParameter` with the reason."""
        found = cls(
            code=_text(args, "code"),
            meter=_text(args, "meter"),
            customer=_text(args, "customer"),
            run=_runs(args),
            since=_time(args, "since"),
            until=_time(args, "until", through_the_day=True),
            taken_again=_yes_no(args, "taken_again"),
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
    if int(raw) > MAX_ROW_ID:  # as a run or a cursor: no row has such an id
        raise BadParameter(f"{name} must be at most {MAX_ROW_ID}, not {raw}")
    return int(raw)


def _runs(args: Mapping[str, str]) -> tuple[int, ...]:
    """`run`: a run id, or several separated by commas; in id order, each once."""
    raw = args.get("run", "").strip()
    if raw == "":
        return ()
    parts = [part.strip() for part in raw.split(",")]
    if "" in parts:
        raise BadParameter(f"run must be run ids separated by commas, not {raw[:40]!r}")
    if len(parts) > MAX_FILTER_RUNS:
        raise BadParameter(f"run takes at most {MAX_FILTER_RUNS} runs, not {len(parts)}")
    return tuple(sorted({positive_int({"run": part}, "run", 0) for part in parts}))


YES_NO = {True: "yes", False: "no"}


def _yes_no(args: Mapping[str, str], name: str) -> bool | None:
    raw = args.get(name, "").strip().lower()
    if raw == "":
        return None
    if raw not in ("yes", "no"):
        raise BadParameter(f"{name} must be yes or no, not {raw[:40]!r}")
    return raw == "yes"


def _text(args: Mapping[str, str], name: str) -> str | None:
    value = args.get(name, "").strip()
    if len(value) > MAX_FILTER_CHARS:
        raise BadParameter(f"{name} is longer than {MAX_FILTER_CHARS} characters")
    if "\x00" in value:  # PostgreSQL's text holds none: the query would fail (a 503)
        raise BadParameter(f"{name} holds a NUL character (U+0000); no stored value does")
    return value or None


def _time(args: Mapping[str, str], name: str, through_the_day: bool = False) -> datetime | None:
    """ISO-8601 date or date-time; without a zone it is UTC. A date alone is its midnight, or
    with `through_the_day` (an inclusive end: `until`) its last microsecond, so "until
    2026-12-01" takes in that day's rows as a person means it."""
    raw = args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if through_the_day and _date_only(raw):
            day_end = datetime.max.replace(tzinfo=UTC) - value
            value += min(timedelta(days=1) - timedelta(microseconds=1), day_end)
        return value
    except (ValueError, OverflowError):  # OverflowError: past year 1 or 9999 in UTC
        raise BadParameter(f"{name} must be an ISO-8601 date or time, not {raw[:40]!r}") from None


def _date_only(raw: str) -> bool:
    try:
        date.fromisoformat(raw)
    except ValueError:
        return False
    return True


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
    else:
        where.append(table.rerun_id.is_(None))
    if found.since is not None:
        where.append(table.created_at >= found.since)
    if found.until is not None:
        where.append(table.created_at <= found.until)
    if found.taken_again is not None:
        marked = table.taken_again
        where.append(marked.is_not(None) if found.taken_again else marked.is_(None))
    return where


def rerun_detail(connection: Connection, action_id: int) -> Mapping[str, Any] | None:
    """What the admin action that queued a quarantine re-run kept (its `filters`, and the
    newest row then, `through`), or None when the action is gone. The dashboard and the API
    record the action (`service.web.actions`); the re-run task reads its input here."""
    detail = connection.execute(select(ACTIONS.c.detail).where(ACTIONS.c.id == action_id)).scalar()
    return detail if isinstance(detail, dict) else None


def rerun_queued_at(connection: Connection, action_id: int) -> datetime | None:
    """When the admin action that queued a quarantine re-run was taken: the re-run's
    reference time, the same however often the task is run again after a crash."""
    query = select(ACTIONS.c.created_at).where(ACTIONS.c.id == action_id)
    return as_utc(connection.execute(query).scalar())


# --- quarantined rows ----------------------------------------------------------------------


class QuarantinedEntry(NamedTuple):
    identifier: str | None
    source: str | None
    row_number: int | None
    code: str | None
    record: Any
    reason: str | None


def list_quarantine(connection: Connection, found: QuarantineFilter, page: Page) -> Listing:
    query = select(QUARANTINE).where(*quarantine_conditions(found))
    return keyset(connection, query, QUARANTINE.c.id, page)


def count_quarantine(connection: Connection, found: QuarantineFilter) -> int:
    """The rows a re-run of `found` would take: not the rows their object sent again since
    (`mark_taken_again`), which it leaves, nor the rows another re-run took (listed with
    their runs' rows, `run=`; `rows_to_rerun` never takes them)."""
    where = [
        *quarantine_conditions(found),
        QUARANTINE.c.taken_again.is_(None),
        QUARANTINE.c.rerun_id.is_(None),
    ]
    query = select(func.count()).select_from(QUARANTINE).where(*where)
    return int(connection.execute(query).scalar_one())


def count_all_quarantined(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(QUARANTINE)).scalar_one())


def latest_quarantined_id(connection: Connection) -> int:
    """The newest quarantined row's id (0 when there is none): a re-run takes no row after
    the one its operator's filter saw last."""
    return int(connection.execute(select(func.max(QUARANTINE.c.id))).scalar() or 0)


class RerunRow(NamedTuple):
    """A quarantined row a re-run picks: the generation of the run that quarantined it (1
    when that run is gone), the generation that run traced its input from (the run's less
    one when it did not keep it), and whether its object sent it again since
    (`mark_taken_again`)."""

    id: int
    generation: int
    traced_from: int
    again: bool


def rows_to_rerun(
    connection: Connection, found: QuarantineFilter, run_key: str, through: int | None = None
) -> list[RerunRow]:
    """The rows the filter picks for the re-run `run_key` (oldest first; up to id
    `through`), never the rows of that re-run's own runs (`run_key`, `run_key:g<n>…`) nor
    rows another re-run took."""
    own = select(RUNS.c.id).where(
        (RUNS.c.run_key == run_key)
        | (func.substr(RUNS.c.run_key, 1, len(run_key) + 2) == f"{run_key}:g")
    )
    where = [
        *quarantine_conditions(found),
        QUARANTINE.c.rerun_id.is_(None),
        QUARANTINE.c.run_id.not_in(own),
    ]
    if through is not None:
        where.append(QUARANTINE.c.id <= through)
    generation = func.coalesce(RUNS.c.generation, 1)
    query = (
        select(
            QUARANTINE.c.id,
            generation.label("generation"),
            func.coalesce(RUNS.c.input_generation, generation - 1).label("traced_from"),
            QUARANTINE.c.taken_again,
        )
        .select_from(QUARANTINE.outerjoin(RUNS, RUNS.c.id == QUARANTINE.c.run_id))
        .where(*where)
        .order_by(QUARANTINE.c.id)
    )
    return [
        RerunRow(
            int(row.id), int(row.generation), int(row.traced_from), row.taken_again is not None
        )
        for row in connection.execute(query)
    ]


def quarantined_at(connection: Connection, ids: Sequence[int]) -> Iterator[QuarantinedAt]:
    """When each row with these ids that has an identifier was quarantined."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        query = select(QUARANTINE.c.id, QUARANTINE.c.identifier, QUARANTINE.c.created_at).where(
            QUARANTINE.c.id.in_(chunk), QUARANTINE.c.identifier.is_not(None)
        )
        for row in connection.execute(query):
            held = as_utc(row.created_at) or datetime.now(UTC)
            yield QuarantinedAt(int(row.id), str(row.identifier), held)


class QuarantinedAt(NamedTuple):
    id: int
    identifier: str
    at: datetime


class QuarantinedFrom(NamedTuple):
    """A quarantined row with the run that quarantined it (its id, source and run key)."""

    id: int
    identifier: str
    at: datetime
    source: str
    run_key: str
    run_id: int


class RunOf(NamedTuple):
    id: int
    source: str
    run_key: str


def rerun_origins(connection: Connection, rerun_id: int) -> dict[str, RunOf]:
    """identifier -> the run that had quarantined the row the re-run's run `rerun_id` took
    (each row a re-run quarantines again is one it took, under the same identifier)."""
    query = (
        select(QUARANTINE.c.identifier, RUNS.c.id, RUNS.c.source, RUNS.c.run_key)
        .join(RUNS, RUNS.c.id == QUARANTINE.c.run_id)
        .where(QUARANTINE.c.rerun_id == rerun_id, QUARANTINE.c.identifier.is_not(None))
    )
    return {
        str(row.identifier): RunOf(int(row.id), str(row.source), str(row.run_key))
        for row in connection.execute(query)
    }


def quarantined_from(connection: Connection, ids: Sequence[int]) -> Iterator[QuarantinedFrom]:
    """Each row with these ids that has an identifier, with when it was quarantined and the
    source and key of the run that quarantined it."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        query = (
            select(
                QUARANTINE.c.id,
                QUARANTINE.c.identifier,
                QUARANTINE.c.created_at,
                RUNS.c.source,
                RUNS.c.run_key,
                RUNS.c.id.label("run_id"),
            )
            .join(RUNS, RUNS.c.id == QUARANTINE.c.run_id)
            .where(QUARANTINE.c.id.in_(chunk), QUARANTINE.c.identifier.is_not(None))
        )
        for row in connection.execute(query):
            held = as_utc(row.created_at) or datetime.now(UTC)
            yield QuarantinedFrom(
                int(row.id),
                str(row.identifier),
                held,
                str(row.source),
                str(row.run_key),
                int(row.run_id),
            )


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
                    QUARANTINE.c.reason,
                )
                .where(QUARANTINE.c.id.in_(chunk))
                .order_by(QUARANTINE.c.id)
            ).all()
        for row in rows:
            yield QuarantinedEntry(
                row.identifier, row.source, row.row_number, row.code, row.record, row.reason
            )


def mark_rerun(engine: Engine, ids: Sequence[int], run_id: int) -> None:
    """The rows with these ids were taken by the re-run `run_id` (one transaction)."""
    chunks = iter(ids)
    with engine.begin() as connection:
        while chunk := list(islice(chunks, ID_BATCH)):
            connection.execute(
                update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(rerun_id=run_id)
            )


def held_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` these runs hold in quarantine: not taken by a re-run, not
    marked taken again (`mark_taken_again`)."""
    return _identifiers_where(engine, run_ids, identifiers, _held)


def marked_among(engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]) -> set[str]:
    """Which of `identifiers` these runs quarantined and a later object version sent again
    since (marked `taken_again`)."""
    return _identifiers_where(engine, run_ids, identifiers, _marked)


def quarantine_times(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> list[tuple[str, int, datetime]]:
    """(identifier, run id, when quarantined) of the rows these runs quarantined under one of
    `identifiers` (held, taken by a re-run, or marked taken again since)."""
    if not run_ids or not identifiers:
        return []
    query = select(QUARANTINE.c.identifier, QUARANTINE.c.run_id, QUARANTINE.c.created_at).where(
        QUARANTINE.c.run_id.in_(list(run_ids)),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        (str(row.identifier), int(row.run_id), as_utc(row.created_at) or datetime.now(UTC))
        for row in rows
    ]


def _identifiers_where(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    conditions: Callable[[Engine, Sequence[int], Sequence[str]], list[ColumnElement[bool]]],
) -> set[str]:
    if not run_ids or not identifiers:
        return set()
    where = conditions(engine, run_ids, identifiers)
    query = select(QUARANTINE.c.identifier).where(*where).distinct()
    with engine.connect() as connection:
        return {str(row.identifier) for row in connection.execute(query)}


def _marked(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Rows these runs quarantined under one of `identifiers`, marked taken again."""
    return [
        QUARANTINE.c.run_id.in_(list(run_ids)),
        QUARANTINE.c.taken_again.is_not(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    ]


def _held(
    engine: Engine, run_ids: Sequence[int], identifiers: Sequence[str]
) -> list[ColumnElement[bool]]:
    """Rows these runs hold in quarantine under one of `identifiers`: not taken by a re-run,
    not marked taken again (by run id: indexed)."""
    return [
        QUARANTINE.c.run_id.in_(list(run_ids)),
        QUARANTINE.c.rerun_id.is_(None),
        QUARANTINE.c.taken_again.is_(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    ]


def mark_taken_again(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    version: str,
    uploaded: datetime,
) -> int:
    """The rows these runs hold in quarantine (`_held`) under one of `identifiers`,
    quarantined before `uploaded`, were sent again from the object version `version` at that
    moment (index mode: uploaded then, Stripe's connector takes it whole; import mode: the
    poller's batch of them acknowledged then): marked with it. Rows quarantined after it are
    that version's own failures. How many."""
    if not run_ids or not identifiers:
        return 0
    query = select(QUARANTINE.c.id, QUARANTINE.c.created_at).where(
        *_held(engine, run_ids, identifiers)
    )
    # S3 keeps whole seconds (rounded down): a row quarantined within the second the version
    # was uploaded in was quarantined before it (a version's own failures come far later)
    bound = uploaded + timedelta(seconds=1)
    with engine.begin() as connection:
        rows = connection.execute(query).all()
        ids = [int(row.id) for row in rows if (as_utc(row.created_at) or bound) < bound]
    mark_rows_taken_again(engine, ids, version)
    return len(ids)


def mark_refused_again(
    engine: Engine,
    run_ids: Sequence[int],
    identifiers: Sequence[str],
    version: str,
    before: datetime,
    earlier: Collection[int] = frozenset(),
) -> int:
    """Stripe refused again, from a later version of their object (`version`, refused at
    `before`), rows these runs (an object's runs and the re-runs that took their rows,
    `runs_correcting`) quarantined before then: the connector takes every version whole, so
    each is a new refusal, which the later version's run remediates. `earlier`: runs among
    them that took Stripe's refusals of an earlier version (an import set whose event, a
    report whose window, came before `before`): their rows count whenever they were
    quarantined (a worker's backlog may have run them after it). Marked taken again: the
    rows held (`_held`), and the entries of them a re-run took and quarantined again, down
    the chain to a held one (so no run over the object counts them as handled). A row a
    re-run corrected or sent is not marked: it was billed. How many rows were held."""
    if not run_ids or not identifiers:
        return 0
    query = select(
        QUARANTINE.c.id,
        QUARANTINE.c.run_id,
        QUARANTINE.c.rerun_id,
        QUARANTINE.c.identifier,
        QUARANTINE.c.created_at,
    ).where(
        QUARANTINE.c.run_id.in_(list(run_ids)),
        QUARANTINE.c.taken_again.is_(None),
        in_listed(QUARANTINE.c.identifier, identifiers, engine),
    )
    with engine.connect() as connection:
        rows = [
            row
            for row in connection.execute(query).all()
            if int(row.run_id) in earlier or (as_utc(row.created_at) or before) < before
        ]
    held = {(int(row.run_id), str(row.identifier)) for row in rows if row.rerun_id is None}
    marked = set(held)
    taken = [row for row in rows if row.rerun_id is not None]
    while True:  # up the chain: an entry whose re-run quarantined it again, and so on
        more = {
            (int(row.run_id), str(row.identifier))
            for row in taken
            if (int(row.rerun_id), str(row.identifier)) in marked
        }
        if more <= marked:
            break
        marked |= more
    ids = [int(row.id) for row in rows if (int(row.run_id), str(row.identifier)) in marked]
    mark_rows_taken_again(engine, ids, version)
    return len(held)


def mark_rows_taken_again(engine: Engine, ids: Sequence[int], version: str) -> None:
    """These rows were taken again from the object version `version` (Stripe's connector
    took a version written after they were quarantined that holds them): marked with it."""
    with engine.begin() as connection:
        chunks = iter(ids)
        while chunk := list(islice(chunks, ID_BATCH)):
            connection.execute(
                update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(taken_again=version)
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


def _quarantined_by_runs_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    return QUARANTINE.c.run_id.in_(select(RUNS.c.id).where(finished_between(start, end)))


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


# The seed of the lock on what a quarantine re-run reads ("mfx_reru", `lock_rerun_inputs`).
RERUN_INPUTS_LOCK = 0x6D66785F72657275


def lock_rerun_inputs(connection: Connection, *, shared: bool) -> None:
    """Hold, until the caller's transaction ends, the rows a quarantine re-run reads (the
    quarantined rows and their audit): queueing a re-run holds it `shared` from its count to
    its task, a retention batch alone from its check for a waiting re-run to its delete, so
    neither comes between the other's two steps (a re-run queued there had its rows
    deleted after they were counted). First in the transaction (`transaction_lock`)."""
    transaction_lock(connection, RERUN_INPUTS_LOCK, shared=shared)


def purge_quarantined(connection: Connection, before: datetime, batch: int) -> int:
    """Retention: delete up to `batch` quarantined rows of runs finished before the cutoff,
    or quarantined before it; but not a row a re-run took while that re-run, or one that
    took the rows it quarantined again, to the end of the chain, is kept (`_chains_kept`).
    In the caller's transaction."""
    old_runs = select(RUNS.c.id).where(RUNS.c.finished_at < before)
    old = QUARANTINE.c.run_id.in_(old_runs) | (QUARANTINE.c.created_at < before)
    # a few ids, looked up first (SQLite counts no rows a WITH deletes)
    found: Sequence[Any] = connection.execute(select(_chains_kept(before))).scalars().all()
    kept = sorted(int(i) for i in found)
    taken = QUARANTINE.c.rerun_id
    where = old & (taken.is_(None) | taken.not_in(kept)) if kept else old
    return delete_batch_in(connection, QUARANTINE, where, batch)


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
