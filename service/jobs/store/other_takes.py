"""Other takes of a quarantined row: the entries of the same identifier and usage (`row_stamp`)
other finished runs hold, the rows the poller sent under a derived identifier, and the older
entries a run's later one supersedes. A re-run's pick and the run alerts judge by these."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import NamedTuple

from sqlalchemy import Connection, Engine, func, select

from service.db.statements import in_listed
from service.jobs.store.quarantine import ID_BATCH, QUARANTINE
from service.jobs.store.runs import RUNS
from service.jobs.store.usage_stamps import row_stamp, stamp_of
from service.models import RunStatus
from service.models._types import as_utc, table_of
from service.models.poller import ImportedRow

IMPORTED = table_of(ImportedRow)


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


def _when(value: datetime | None) -> datetime:
    return as_utc(value) or datetime.now(UTC)
