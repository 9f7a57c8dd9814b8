"""What a quarantine re-run counts, reads and marks: the rows a filter would take (counted
when the re-run is queued, under `lock_rerun_inputs`, which retention takes too), what the
admin action that queued it kept, the rows it picks and the runs they came from, and the mark
on the rows it took. Apart from the quarantined rows' lists and groups (`quarantine.py`): only
queueing a re-run, the re-run task and retention's lock use these."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, and_, case, func, select, update

from remediation.codes import ErrorCode
from remediation.core.rules.timestamps import READINGS, spelt_seconds
from remediation.fieldvalues import parse_timestamp
from remediation.limits import MAX_ISO_TEXT
from remediation.records import MFX_PREFIX
from service.db.locks import transaction_lock
from service.db.statements import in_listed
from service.jobs.store.quarantine import ID_BATCH, QUARANTINE, quarantine_conditions
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.runs import RUNS
from service.models import RunStatus
from service.models._types import as_utc, table_of
from service.models.alerts import AdminAction
from service.models.poller import ImportedRow

ACTIONS = table_of(AdminAction)
IMPORTED = table_of(ImportedRow)


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


class QuarantinedEntry(NamedTuple):
    identifier: str | None
    source: str | None
    row_number: int | None
    code: str | None
    record: Any
    reason: str | None


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
        query = select(
            QUARANTINE.c.id,
            QUARANTINE.c.identifier,
            QUARANTINE.c.created_at,
            QUARANTINE.c.code,
            QUARANTINE.c.record,
        ).where(QUARANTINE.c.id.in_(chunk), QUARANTINE.c.identifier.is_not(None))
        for row in connection.execute(query):
            held = as_utc(row.created_at) or datetime.now(UTC)
            yield QuarantinedAt(int(row.id), str(row.identifier), held, row.code, row.record)


class QuarantinedAt(NamedTuple):
    id: int
    identifier: str
    at: datetime
    code: str | None = None
    record: Mapping[str, Any] | None = None


def sent_seconds(
    connection: Connection, engine: Engine, identifiers: Sequence[str]
) -> dict[str, set[int | None]]:
    """identifier -> the timestamps (None: none) the poller sent rows of it at, for those of
    `identifiers` it sent (by its identifier index)."""
    found: dict[str, set[int | None]] = {}
    if not identifiers:
        return found
    query = (
        select(IMPORTED.c.identifier, IMPORTED.c.timestamp)
        .where(in_listed(IMPORTED.c.identifier, list(identifiers), engine))
        .where(IMPORTED.c.sent.is_(True))
        .distinct()
    )
    for row in connection.execute(query):
        stamp = None if row.timestamp is None else int(row.timestamp)
        found.setdefault(str(row.identifier), set()).add(stamp)
    return found


class QuarantinedFrom(NamedTuple):
    """A quarantined row with the run that quarantined it (its id, source and run key)."""

    id: int
    identifier: str
    at: datetime
    source: str
    run_key: str
    run_id: int
    code: str | None = None
    record: Mapping[str, Any] | None = None


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
    """Each row with these ids that has an identifier, with when it was quarantined, the
    source and key of the run that quarantined it, its code and its record."""
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
                QUARANTINE.c.code,
                QUARANTINE.c.record,
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
                row.code,
                row.record,
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


def mark_rerun_in(connection: Connection, ids: Sequence[int], run_id: int) -> None:
    """The rows with these ids were taken by the re-run `run_id`, in the caller's transaction
    (the one that records the run done, or a later one, the re-run's lock held still)."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        connection.execute(
            update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(rerun_id=run_id)
        )


class RunTakes(NamedTuple):
    """What became of the rows a run quarantined (those still kept): how many there are,
    how many wait (the quarantine page's `taken_again=no`: neither taken by a re-run nor
    marked taken again), the re-runs that took some (run id, rows; oldest run first) and how
    many were taken again elsewhere (marked `taken_again`, no re-run took them)."""

    quarantined: int
    waiting: int
    reruns: list[tuple[int, int]]
    elsewhere: int

    @property
    def taken(self) -> int:
        return self.quarantined - self.waiting


# The rows waiting for a fix: the quarantine page's `taken_again=no` (service.notify.content's
# WAITING), whose conditions without `run=` leave out the rows a re-run took.
WAITING = and_(*quarantine_conditions(QuarantineFilter(taken_again=False)))


def run_takes(connection: Connection, run_id: int) -> RunTakes:
    """`RunTakes` of the run `run_id`: one query by the run index, grouped by re-run (a run's
    rows are taken by a few re-runs at most)."""
    waiting = func.sum(case((WAITING, 1), else_=0)).label("waiting")
    query = (
        select(
            QUARANTINE.c.rerun_id,
            func.count().label("rows"),
            func.count(QUARANTINE.c.taken_again).label("marked"),
            waiting,
        )
        .where(QUARANTINE.c.run_id == run_id)
        .group_by(QUARANTINE.c.rerun_id)
    )
    total = held = elsewhere = 0
    reruns: list[tuple[int, int]] = []
    for row in connection.execute(query):
        total += int(row.rows)
        held += int(row.waiting or 0)
        if row.rerun_id is None:
            elsewhere += int(row.marked)
        else:
            reruns.append((int(row.rerun_id), int(row.rows)))
    return RunTakes(total, held, sorted(reruns), elsewhere)


def runs_of_rows(connection: Connection, ids: Sequence[int]) -> list[int]:
    """The runs that quarantined the rows with these ids."""
    found: set[int] = set()
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        query = select(QUARANTINE.c.run_id).where(QUARANTINE.c.id.in_(chunk)).distinct()
        found.update(int(row.run_id) for row in connection.execute(query))
    return sorted(found)


# The seed of the lock on what a quarantine re-run reads ("mfx_rrin", `lock_rerun_inputs`).
# Not the seed of the lock a re-run task holds while it runs (`quarantine_rerun.
# RERUN_LOCK_KEY`, "mfx_reru"): it was, so a click on "Re-run" waited in the web request for
# as long as a re-run ran (minutes for a large one). Retention's check for a re-run queued,
# running or dead-lettered (`any_unfinished`) is what keeps a running re-run's rows.
RERUN_INPUTS_LOCK = 0x6D66785F7272696E


def lock_rerun_inputs(connection: Connection, *, shared: bool) -> None:
    """Hold, until the caller's transaction ends, the rows a quarantine re-run reads (the
    quarantined rows and their audit): queueing a re-run holds it `shared` from its count to
    its task, a retention batch alone from its check for a waiting re-run to its delete, so
    neither comes between the other's two steps (a re-run queued there had its rows
    deleted after they were counted). First in the transaction (`transaction_lock`)."""
    transaction_lock(connection, RERUN_INPUTS_LOCK, shared=shared)


class HeldEntry(NamedTuple):
    """A quarantined row a re-run picked: its identifier, its timestamp as it came (`stamp`),
    the run that quarantined it and when."""

    id: int
    identifier: str
    stamp: str
    run_id: int
    at: datetime


class OtherTake(NamedTuple):
    """Another take of an identifier with a timestamp (`stamp`): a finished run quarantined
    it (`run_id`, `at`; `as_identifier` None), or the poller sent it as `as_identifier` (a
    derived identifier, from the object `source`; `run_id` None)."""

    identifier: str
    stamp: str
    run_id: int | None
    source: str
    at: datetime | None
    as_identifier: str | None


def stamp_of(value: object) -> str:
    """A row's timestamp as one text to compare: the whole seconds the remediation rules
    would send it at (`usage_second`: `1764000000000` and `2025-11-24T16:00:00Z` are
    `1764000000`), another text trimmed, none as ""."""
    seconds = usage_second(value)
    if seconds is not None:
        return str(seconds)
    return "" if value is None else str(value).strip()


def usage_second(value: object) -> int | None:
    """A row's timestamp in whole seconds, read as the remediation rules read it: digits (or
    a JSON number's spelling), ISO-8601 with a zone, a number in ms, µs or ns divided down
    (by its size, as a reason reads it); None when it has none or it is no time."""
    seconds = parse_timestamp(value)
    if seconds is None:
        seconds = spelt_seconds(value) if isinstance(value, str) else None
    if seconds is None:
        seconds = _iso_second(value)
    if seconds is None:
        return None
    for at_least, divisor, _unit in READINGS:
        if abs(seconds) >= at_least:
            return seconds // divisor
    return seconds


def _iso_second(value: object) -> int | None:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ISO_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return None if moment.tzinfo is None else int(moment.timestamp())


def row_stamp(record: Mapping[str, Any] | None) -> str:
    """What tells a stored row's usage from another's under the same identifier: its
    timestamp (`stamp_of`); a row without one (Stripe takes it at the moment it receives
    it), its other fields as stored (event name, payload; not its error columns nor our
    `mfx_` notes) instead, after a NUL no timestamp holds: two rows
    without a timestamp are the same usage only when those are equal too (`k1` of cus_1
    quarantined on day 1 and `k1` of cus_2 on day 5 are two rows, each waiting)."""
    row = record or {}
    stamp = stamp_of(row.get("timestamp"))
    if stamp:
        return stamp
    usage = {
        str(key): value.strip() if isinstance(value, str) else value
        for key, value in row.items()
        if key not in _NOT_USAGE and not str(key).startswith(MFX_PREFIX)
    }
    return "\0" + json.dumps(usage, sort_keys=True, default=str)


# what a stored row holds beside its usage (its error columns, as Stripe's failed records
# and a quarantine file have them)
_NOT_USAGE = frozenset({"identifier", "timestamp", "error_code", "error_message"})


def sent_as_held(code: str | None, record: Mapping[str, Any] | None, sent: int | None) -> bool:
    """Whether a row sent at the second `sent` (None: without a timestamp) is the usage of
    a quarantined row of the same identifier (its `code` and `record`): the same second
    (`usage_second`: an identifier may be used again days later for other usage, Stripe
    deduping it for about 24 hours only). A row quarantined for its timestamp itself goes
    out at another one once fixed, and a row of no readable timestamp, or one sent without,
    cannot be told from another: those are the same usage by the identifier alone (marked
    as sent, never re-run a second time)."""
    if code in TIMESTAMP_CODES or sent is None:
        return True
    held = usage_second((record or {}).get("timestamp"))
    return held is None or held == sent


# the codes of a row whose timestamp is what is wrong: fixed, it goes out at another second
TIMESTAMP_CODES = frozenset(
    {
        ErrorCode.TIMESTAMP_IN_FUTURE,
        ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST,
        ErrorCode.TIMESTAMP_INVALID,
    }
)


def held_entries(connection: Connection, ids: Sequence[int]) -> Iterator[HeldEntry]:
    """The rows with these ids that have an identifier, with their runs and times."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, ID_BATCH)):
        query = select(
            QUARANTINE.c.id,
            QUARANTINE.c.identifier,
            QUARANTINE.c.record,
            QUARANTINE.c.run_id,
            QUARANTINE.c.created_at,
        ).where(QUARANTINE.c.id.in_(chunk), QUARANTINE.c.identifier.is_not(None))
        for row in connection.execute(query):
            stamp = row_stamp(row.record)
            at = _when(row.created_at)
            yield HeldEntry(int(row.id), str(row.identifier), stamp, int(row.run_id), at)


def other_takes(
    connection: Connection,
    engine: Engine,
    identifiers: Sequence[str],
    derived: Mapping[str, str],
    own_key: str,
) -> list[OtherTake]:
    """The entries quarantining one of `identifiers` of finished runs but the re-run
    `own_key`'s own (a crashed try of it wrote them: the row is still its to take), and the
    rows the poller sent under a `derived` identifier (derived -> original): what it sent,
    billed, never purged (the audit of a correction is, at 35 days). By the quarantined
    rows' identifier index and the poller's."""
    own = (RUNS.c.run_key == own_key) | (
        func.substr(RUNS.c.run_key, 1, len(own_key) + 2) == f"{own_key}:g"
    )
    held = (
        select(QUARANTINE.c.identifier, QUARANTINE.c.record, QUARANTINE.c.run_id, RUNS.c.source)
        .add_columns(QUARANTINE.c.created_at)
        .select_from(QUARANTINE.join(RUNS, RUNS.c.id == QUARANTINE.c.run_id))
        .where(in_listed(QUARANTINE.c.identifier, identifiers, engine))
        .where(~own, RUNS.c.status == RunStatus.DONE)
    )
    found = [
        OtherTake(
            str(r.identifier),
            row_stamp(r.record),
            int(r.run_id),
            str(r.source),
            _when(r.created_at),
            None,
        )
        for r in connection.execute(held)
    ]
    sent = (
        select(IMPORTED.c.identifier, IMPORTED.c.timestamp, IMPORTED.c.object_key)
        .where(in_listed(IMPORTED.c.identifier, list(derived), engine))
        .where(IMPORTED.c.sent.is_(True))
        .distinct()
    )
    for r in connection.execute(sent):
        original = derived[str(r.identifier)]
        stamp = stamp_of(r.timestamp)
        found.append(OtherTake(original, stamp, None, str(r.object_key), None, str(r.identifier)))
    return found


def quarantined_again_label(source: str, run_id: int | None, at: datetime) -> str:
    """What an entry superseded by a later one of the same row says took it (shown after
    "taken again by Stripe from")."""
    return (
        f"{source}, quarantined again there by run {run_id} at "
        f"{as_utc(at) or at:%Y-%m-%d %H:%M:%S} UTC (that entry is the one to re-run)"
    )


def superseded_by_run(engine: Engine, run_id: int) -> dict[int, str]:
    """The entries other runs hold (neither taken by a re-run nor marked taken again) of rows
    the finished run `run_id` quarantined again after them: the same identifier and timestamp
    (`row_stamp`; an identifier may be used again a day later for other usage; rows without
    a timestamp, the same event name and payload too), id -> what
    took them (`quarantined_again_label`). The newer entry is the one to re-run, as a
    re-run's pick judges (`rerun_pick._taken_since`): the older one waits for nothing. The
    run's identifiers by the run index, a batch at a time, the others' entries by the
    identifier index; the run's own records are read only for identifiers others hold."""
    found: dict[int, str] = {}
    table = QUARANTINE.c
    with engine.connect() as connection:
        source = connection.execute(select(RUNS.c.source).where(RUNS.c.id == run_id)).scalar()
        after = 0
        while True:
            query = (
                select(table.id, table.identifier)
                .where(table.run_id == run_id, table.identifier.is_not(None), table.id > after)
                .order_by(table.id)
                .limit(SUPERSEDE_BATCH)
            )
            batch = connection.execute(query).all()
            if not batch:
                return found
            after = int(batch[-1].id)
            identifiers = sorted({str(row.identifier) for row in batch})
            older = connection.execute(
                select(table.id, table.identifier, table.record, table.created_at).where(
                    in_listed(table.identifier, identifiers, engine),
                    table.run_id != run_id,
                    table.rerun_id.is_(None),
                    table.taken_again.is_(None),
                )
            ).all()
            if not older:
                continue
            others = sorted({str(row.identifier) for row in older})
            # by the identifier index alone: with `run_id = ` PostgreSQL read the run's rows
            # by the run index, each checked against the list (3 minutes for a run of
            # 100,000 rows quarantined again)
            newer = select(table.identifier, table.record, table.created_at, table.run_id).where(
                in_listed(table.identifier, others, engine)
            )
            latest: dict[tuple[str, str], datetime] = {}
            for row in connection.execute(newer):
                if int(row.run_id) != run_id:
                    continue
                held = (str(row.identifier), row_stamp(row.record))
                at = _when(row.created_at)
                latest[held] = max(latest.get(held) or at, at)
            for row in older:
                stamp = row_stamp(row.record)
                again = latest.get((str(row.identifier), stamp))
                if again is not None and _when(row.created_at) < again:
                    found[int(row.id)] = quarantined_again_label(str(source), run_id, again)


SUPERSEDE_BATCH = 1_000  # a run's identifiers looked up at once


def newest_generation(connection: Connection) -> int:
    """The highest generation a run wrote in (1 with none)."""
    return int(connection.execute(select(func.max(RUNS.c.generation))).scalar() or 1)


def _when(value: datetime | None) -> datetime:
    return as_utc(value) or datetime.now(UTC)
