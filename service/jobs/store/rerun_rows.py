"""The rows a quarantine re-run picks and where they came from: the filter's rows (never its
own runs' nor another re-run's), when and by which run each was quarantined, what the poller
sent of their identifiers, and the rows read back as records. The re-run task's reads; the
judgement of which rows it takes is `service.jobs.rerun_pick`'s."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, func, select

from service.db.statements import in_listed
from service.jobs.store.quarantine import ID_BATCH, QUARANTINE, quarantine_conditions
from service.jobs.store.quarantine_filter import QuarantineFilter
from service.jobs.store.runs import RUNS
from service.models._types import as_utc, table_of
from service.models.poller import ImportedRow

IMPORTED = table_of(ImportedRow)


class QuarantinedEntry(NamedTuple):
    identifier: str | None
    source: str | None
    row_number: int | None
    code: str | None
    record: Any
    reason: str | None


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


def newest_generation(connection: Connection) -> int:
    """The highest generation a run wrote in (1 with none)."""
    return int(connection.execute(select(func.max(RUNS.c.generation))).scalar() or 1)
