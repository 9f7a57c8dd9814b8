"""The poller's store as other rooms read it: the dashboard, the digests, /metrics, the jobs
and the worker find the poller's objects and imported rows through these queries (the
contracts in pyproject.toml let other rooms import this module of the poller only, so it holds
every read they need; the poller reads them here too). The poller writes them through
`service.poller.versions.PollerStore`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Engine,
    Table,
    and_,
    case,
    func,
    or_,
    select,
    union_all,
)
from sqlmodel import Session, col
from sqlmodel import select as select_model

from remediation.records import UsageRecord
from service.db.statements import in_listed
from service.models import BucketObject, ImportedRow, ObjectStatus, PollerBatch
from service.models._types import as_utc, latest, table_of

MAX_IDENTIFIER = 512  # imported_rows.identifier (longer ones are not recorded)


def recordable(identifier: str) -> bool:
    """Whether imported_rows can hold the identifier, so a look-up may find it (NUL: never
    recorded, and PostgreSQL refuses it as a parameter)."""
    return len(identifier) <= MAX_IDENTIFIER and "\x00" not in identifier


def _table(model: Any) -> Table:
    return table_of(model)


def _among(
    column: Any, identifiers: Collection[str], bind: Engine | Connection
) -> ColumnElement[bool]:
    """`column IN identifiers` in one parameter, however many (`db.statements.in_listed`: a
    parameter each cost the service's runs on PostgreSQL ~7 ms per 1,000 identifiers to
    render, 1M rows 10.7 s against 3.7 s on SQLite, bench/service_path.py), those no row can
    hold left out (`recordable`)."""
    return in_listed(column, sorted(i for i in identifiers if recordable(i)), bind)


def objects_by_keys(connection: Connection, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Every recorded version of these keys, oldest first."""
    if not keys:
        return []
    table = _table(BucketObject)
    rows = connection.execute(select(table).where(table.c.key.in_(keys)).order_by(table.c.id)).all()
    return [dict(row._mapping) for row in rows]


def newest_object(engine: Engine, keys: Collection[str]) -> dict[str, Any] | None:
    """The newest recorded version of any of these keys."""
    table = _table(BucketObject)
    query = select(table).where(table.c.key.in_(keys)).order_by(table.c.id.desc()).limit(1)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return None if row is None else dict(row._mapping)


def count_objects(connection: Connection, status: ObjectStatus) -> int:
    table = _table(BucketObject)
    query = select(func.count()).select_from(table).where(table.c.status == status)
    return int(connection.execute(query).scalar() or 0)


def objects_by_status(connection: Connection) -> list[tuple[str, int]]:
    """(status, objects) for every status some object has."""
    table = _table(BucketObject)
    query = select(table.c.status, func.count().label("objects")).group_by(table.c.status)
    return [(str(row.status), int(row.objects)) for row in connection.execute(query)]


def imported_rows_by_identifier(session: Session, identifiers: set[str]) -> dict[str, ImportedRow]:
    """Rows we imported ourselves (bundled poller, index mode), by identifier: the first one
    recorded for each (in the caller's session)."""
    if not identifiers:
        return {}
    listed = _among(col(ImportedRow.identifier), identifiers, session.connection())
    rows = session.exec(select_model(ImportedRow).where(listed).order_by(col(ImportedRow.id))).all()
    found: dict[str, ImportedRow] = {}
    for row in rows:
        found.setdefault(row.identifier, row)
    return found


def taken_by(
    session: Session, rows: dict[str, ImportedRow], end: datetime
) -> dict[str, ImportedRow]:
    """Of `rows` (by identifier), those Stripe could have taken by `end` (an error report's
    window's end): sent by the poller by then (import mode; a version it sent records when),
    or, never sent by it (Stripe's connector took it: index mode), uploaded by then (no upload
    time known: it may have been). An unmatched report (usage sent another way, refused) was
    linked to a row of the same identifier the poller sent after it, billed: that row was
    quarantined for the report's code, and a re-run of it billed it twice."""
    versions: dict[tuple[str, str], BucketObject | None] = {}
    for key, etag in sorted({(row.object_key, row.etag) for row in rows.values()}):
        query = select_model(BucketObject).where(BucketObject.key == key, BucketObject.etag == etag)
        versions[(key, etag)] = session.exec(query).first()
    return {
        identifier: row
        for identifier, row in rows.items()
        if _taken_before(versions[(row.object_key, row.etag)], end)
    }


def _taken_before(obj: BucketObject | None, end: datetime) -> bool:
    if obj is None:
        return False
    sent = as_utc(obj.first_sent_at)
    if sent is not None:
        return sent <= end
    uploaded = as_utc(obj.last_modified)
    return uploaded is None or uploaded <= end


def row_numbers(engine: Engine, key: str, identifiers: set[str]) -> dict[str, int]:
    """identifier -> its row number in the object `key`, for the rows the poller recorded."""
    with Session(engine) as session:
        found = session.exec(
            select_model(ImportedRow.identifier, ImportedRow.row_number).where(
                ImportedRow.object_key == key,
                _among(col(ImportedRow.identifier), identifiers, engine),
            )
        ).all()
    return dict(found)


def row_numbers_path(path: Path) -> Path:
    """Beside the failed-records file at `path`: the row number in the object of each of its
    rows, in order, 8 bytes a row (little-endian)."""
    return path.with_name(f"{path.name}.rows")


def source_row_numbers(path: Path) -> npt.NDArray[np.int64] | None:
    """The row numbers in the object of the rows of the failed-records file at `path` (its
    row n: item n - 1), or None: none written beside it (a poller before them)."""
    numbers = row_numbers_path(path)
    if not numbers.exists():
        return None
    return np.fromfile(numbers, dtype="<i8")


def lookup_batches(
    records: Iterator[UsageRecord], size: int = 1000
) -> Iterator[tuple[list[UsageRecord], set[str]]]:
    """The records `size` at a time, each batch with the identifiers of it the poller may
    have recorded, to look up in one query (NUL: never recorded, and PostgreSQL refuses it
    as a parameter)."""
    while batch := list(islice(records, size)):
        yield batch, {r.identifier for r in batch if r.identifier and recordable(r.identifier)}


def sent_moments(engine: Engine, identifiers: set[str]) -> dict[str, datetime]:
    """identifier -> when a version of some object that sent it sent its batch (the latest
    such moment: a later version of the object that sent it again too, `_sent_rows`), for
    those of `identifiers` the poller sent: recorded as sent in a batch that was recorded (a
    batch is recorded before it goes out; a row recorded as sent outside any batch never
    went)."""
    if not identifiers:
        return {}
    query = _sent_rows(engine, identifiers)
    with engine.connect() as connection:
        found = connection.execute(query).all()
    return latest((str(row.identifier), as_utc(row.first_sent_at)) for row in found)


def sending_keys(engine: Engine, identifiers: set[str]) -> set[str]:
    """The keys of the objects whose versions sent `identifiers` (as `sent_moments` counts a
    row sent): the runs over them are the ones that may hold such a row as Stripe refused it
    (an error report's: the report names the object that sent the row, not a copy of it)."""
    if not identifiers:
        return set()
    query = _sent_rows(engine, identifiers)
    with engine.connect() as connection:
        return {str(row.object_key) for row in connection.execute(query)}


def sent_by_version(engine: Engine, key: str, etag: str, identifiers: set[str]) -> dict[str, int]:
    """identifier -> the row the object version (`key`, `etag`) sent it from, for those of
    `identifiers` that version sent (as `sent_moments` counts a row sent; first or again): a
    row of it the poller refused under one of them can never go out, under it or a derived
    one (Stripe took an event under it from that row, billed)."""
    if not identifiers:
        return {}
    query = _sent_rows(engine, identifiers, (key, etag))
    with engine.connect() as connection:
        return {str(row.identifier): int(row.row_number) for row in connection.execute(query)}


def _sent_rows(
    engine: Engine, identifiers: set[str], version: tuple[str, str] | None = None
) -> CompoundSelect[str, int, datetime, str]:
    """SELECT identifier, row_number, first_sent_at, object_key of the sends of `identifiers`
    (of the object `version` only, when given) in a batch that was recorded (a batch is
    recorded before it goes out): by the version that sent each first, and by the later version of
    its object that sent it again (`imported_rows.resent_etag`: the day's file rewritten in
    place with a refused row fixed by hand)."""
    rows, objects = _table(ImportedRow), _table(BucketObject)
    batches = _table(PollerBatch)
    listed, sends = _among(rows.c.identifier, identifiers, engine), []
    for etag, number in ((rows.c.etag, rows.c.row_number), (rows.c.resent_etag, rows.c.resent_row)):
        version_of = and_(objects.c.key == rows.c.object_key, objects.c.etag == etag)
        within = and_(
            batches.c.object_id == objects.c.id,
            batches.c.first_row <= number,
            number < batches.c.first_row + batches.c.rows,
        )
        send = (
            select(
                rows.c.identifier,
                number.label("row_number"),
                batches.c.first_sent_at,
                rows.c.object_key,
            )
            .select_from(rows.join(objects, version_of).join(batches, within))
            .where(listed)
        )
        if etag is rows.c.etag:  # the first send (one again: its version named alone)
            send = send.where(rows.c.sent.is_(True))
        if version is not None:
            send = send.where(objects.c.key == version[0], objects.c.etag == version[1])
        sends.append(send)
    return union_all(*sends)


class FirstVersion(NamedTuple):
    """The first object version the poller recorded a row with: the one that sent it, if
    any did (`sent`), and what the row held there (`content`: `remediation.rowdigest`, None when
    recorded before migration 0007); `latest`: what the row's latest send from the object held
    (a later version of it that sent the row again, `imported_rows.resent_content`; else
    `content`)."""

    key: str
    etag: str
    sent: bool
    content: int | None
    latest: int | None

    @property
    def version(self) -> tuple[str, str]:
        return self.key, self.etag


def taken_since(engine: Engine, identifiers: set[str], since: datetime) -> set[str]:
    """Those of `identifiers` that an object version uploaded after `since` held: the first
    version the poller recorded them with, or the latest that held them too (Stripe's S3
    connector takes every version whole, so it took them again from it)."""
    return set(held_since(engine, identifiers, since))


class LaterVersion(NamedTuple):
    """An object version holding an identifier: when it was uploaded, and its ETag."""

    uploaded: datetime
    etag: str


def held_since(
    engine: Engine, identifiers: set[str], since: datetime
) -> dict[str, dict[str, LaterVersion]]:
    """identifier -> {object key: its latest version holding it}, for the versions uploaded
    after `since` that held those of `identifiers` (as `taken_since`): the caller asks
    whether Stripe refused the row there too (`jobs.later_rows.TakenAgain`)."""
    if not identifiers:
        return {}
    rows, objects = _table(ImportedRow), _table(BucketObject)
    versions = and_(
        objects.c.key == rows.c.object_key,
        or_(objects.c.etag == rows.c.etag, objects.c.etag == rows.c.latest_etag),
    )
    query = (
        select(rows.c.identifier, rows.c.object_key, objects.c.etag, objects.c.last_modified)
        .join(objects, versions)
        .where(_among(rows.c.identifier, identifiers, engine))
    )
    with engine.connect() as connection:
        found = connection.execute(query).all()
    held: dict[str, dict[str, LaterVersion]] = {}
    for row in found:
        at = as_utc(row.last_modified)
        if at is None or at <= since:
            continue
        keys = held.setdefault(str(row.identifier), {})
        known = keys.get(str(row.object_key))
        if known is None or known.uploaded < at:
            keys[str(row.object_key)] = LaterVersion(at, str(row.etag))
    return held


def first_versions(engine: Engine, identifiers: set[str]) -> dict[str, FirstVersion]:
    """identifier -> the first object version the poller recorded it with (a later version,
    or another object, that holds it too is taken for a copy: in import mode the poller leaves
    such rows out, `service.poller.other_versions.OtherVersions`)."""
    if not identifiers:
        return {}
    rows = _table(ImportedRow)
    latest = case((rows.c.resent_etag.is_(None), rows.c.content), else_=rows.c.resent_content)
    columns = (rows.c.identifier, rows.c.object_key, rows.c.etag, rows.c.sent, rows.c.content)
    query = (
        select(*columns, latest.label("latest"))
        .where(_among(rows.c.identifier, identifiers, engine))
        .order_by(rows.c.id.desc())
    )
    with engine.connect() as connection:
        found = connection.execute(query).all()
    return {  # the first one last
        str(row.identifier): FirstVersion(
            str(row.object_key), str(row.etag), bool(row.sent), row.content, row.latest
        )
        for row in found
    }


def first_etags_in(engine: Engine, key: str, identifiers: Collection[str]) -> dict[str, str]:
    """identifier -> the ETag of the first version of the object at `key` the poller recorded
    it with, for those of `identifiers` it did (one row per identifier and object)."""
    if not identifiers:
        return {}
    rows = _table(ImportedRow)
    query = select(rows.c.identifier, rows.c.etag).where(
        rows.c.object_key == key, _among(rows.c.identifier, identifiers, engine)
    )
    with engine.connect() as connection:
        return {str(row.identifier): str(row.etag) for row in connection.execute(query)}


def objects_holding(engine: Engine, identifiers: set[str]) -> dict[str, str]:
    """object key -> the ETag we imported it at, for every object holding one of the rows."""
    with Session(engine) as session:
        rows = session.exec(
            select_model(ImportedRow.object_key, ImportedRow.etag).where(
                _among(col(ImportedRow.identifier), identifiers, engine)
            )
        ).all()
    return {key: etag for key, etag in rows}


class ObjectTimes(NamedTuple):
    """When an object version was uploaded (its LastModified as the poller listed it) and
    when the poller first sent a row of it (import mode; None when it only indexed it)."""

    uploaded: datetime | None
    first_sent: datetime | None


def object_times(engine: Engine, key: str, etag: str) -> ObjectTimes | None:
    """The times of the object version, or None when the poller never listed it."""
    with Session(engine) as session:
        row = session.exec(
            select_model(BucketObject.last_modified, BucketObject.first_sent_at).where(
                col(BucketObject.key) == key, col(BucketObject.etag) == etag
            )
        ).first()
    if row is None:
        return None
    return ObjectTimes(as_utc(row[0]), as_utc(row[1]))


def event_names_of(engine: Engine, identifiers: set[str]) -> set[str]:
    """The event names of the rows we imported with these identifiers."""
    with Session(engine) as session:
        names = session.exec(
            select_model(ImportedRow.event_name).where(
                _among(col(ImportedRow.identifier), identifiers, engine)
            )
        ).all()
    return {name for name in names if name}


def objects_seen_between(
    engine: Engine, start: datetime, end: datetime, event_names: Collection[str]
) -> list[tuple[str, str]]:
    """(key, ETag) of the objects first seen in [start, end] holding rows of these event
    names, newest first."""
    with Session(engine) as session:
        rows = session.exec(
            select_model(BucketObject.key, BucketObject.etag)
            .where(col(BucketObject.first_seen) >= start, col(BucketObject.first_seen) <= end)
            .where(
                col(BucketObject.key).in_(
                    select_model(ImportedRow.object_key).where(
                        col(ImportedRow.event_name).in_(event_names)
                    )
                )
            )
            .order_by(col(BucketObject.first_seen).desc())
        ).all()
    return [(key, etag) for key, etag in rows]


def objects_named(engine: Engine, name: str) -> list[tuple[str, datetime | None]]:
    """(key, first seen) of the objects whose key ends with `name`, newest first."""
    with Session(engine) as session:
        rows = session.exec(
            select_model(BucketObject.key, BucketObject.first_seen)
            .where(col(BucketObject.key).endswith(name, autoescape=True))
            .order_by(col(BucketObject.first_seen).desc())
        ).all()
    return [(key, as_utc(first_seen)) for key, first_seen in rows]
