"""The poller's store: bucket objects, imported rows, local import sets. The dashboard,
the digests, /metrics and the jobs read the poller's objects through the functions at the end.

Inserts that may repeat (a retried object, a duplicate identifier inside one file) use the
dialect's ON CONFLICT DO NOTHING, so SQLite and PostgreSQL behave the same. Rows are inserted
in bulk (one statement per group of batches), never one commit per row.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    and_,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col
from sqlmodel import select as select_model

from remediation.poller import RowRef
from remediation.ports import ObjectInfo
from remediation.records import UsageRecord
from service.db import insert_or_ignore
from service.models import BucketObject, ImportedRow, ObjectStatus, PollerBatch
from service.models._types import as_utc, latest, table_of, utcnow

MAX_IDENTIFIER = 512  # imported_rows.identifier (longer ones are not recorded)
MAX_EVENT_NAME = 255
SAME_UPLOAD = timedelta(seconds=1)  # S3's LastModified resolution: later is another upload
GONE = "not imported: "  # the error of a version gone when read (`PollerStore.mark_gone`)
# statuses of a version read again when the same bytes are uploaded again (index mode)
READ_AGAIN = (ObjectStatus.INDEXED, ObjectStatus.IMPORTED)


def bigint(value: int | None) -> int | None:
    """`value` when a BIGINT holds it, else None: a timestamp of 20 digits is digits, not a
    time (the row fails validation), and would fail the whole file's insert."""
    return value if value is None or -(2**63) <= value < 2**63 else None


def recordable(identifier: str) -> bool:
    """Whether imported_rows can hold the identifier, so a look-up may find it (NUL: never
    recorded, and PostgreSQL refuses it as a parameter)."""
    return len(identifier) <= MAX_IDENTIFIER and "\x00" not in identifier


class PollerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, table: Any) -> Insert:
        return insert_or_ignore(self.engine.dialect.name, table)

    def seen(self) -> tuple[set[tuple[str, str]], bool]:
        """(key, etag) pairs already handled (status other than `seen`), and first-sync flag.
        A version that was gone when read is not handled: listed again (put back with the
        same bytes), it is taken."""
        table = _table(BucketObject)
        gone = table.c.error.startswith(GONE, autoescape=True)
        query = select(table.c.key, table.c.etag, table.c.status, gone)
        with self.engine.connect() as conn:
            rows = [
                (str(key), str(etag), str(status), bool(g))
                for key, etag, status, g in conn.execute(query)
            ]
        done = {
            (key, etag)
            for key, etag, status, was_gone in rows
            if status != ObjectStatus.SEEN and not (status == ObjectStatus.SKIPPED and was_gone)
        }
        return done, not rows

    def uploaded_again(self, listed: Sequence[ObjectInfo]) -> set[tuple[str, str]]:
        """(key, etag) of the versions indexed or imported whose listing has a later
        LastModified: the same bytes uploaded again under the key. Stripe's S3 connector
        takes such an upload as a new object, whole (index mode reads it again:
        `service.poller.again`), also of a version the poller imported before a switch from
        `on` to `index`."""
        table = _table(BucketObject)
        query = select(table.c.key, table.c.etag, table.c.last_modified).where(
            table.c.status.in_(READ_AGAIN)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        indexed = {(str(row.key), str(row.etag)): as_utc(row.last_modified) for row in rows}
        found = set()
        for obj in listed:
            before = indexed.get((obj.key, obj.etag))
            uploaded = as_utc(obj.last_modified)
            if before is not None and uploaded is not None and uploaded - before >= SAME_UPLOAD:
                found.add((obj.key, obj.etag))
        return found

    def waiting(self, now: datetime) -> set[tuple[str, str]]:
        """(key, etag) of failing objects still backing off (`next_attempt_at` ahead): also
        a version indexed or imported whose new upload failed to be read again (it keeps its
        status)."""
        table = _table(BucketObject)
        query = select(table.c.key, table.c.etag).where(
            table.c.status.in_((ObjectStatus.SEEN, *READ_AGAIN)),
            table.c.next_attempt_at > now,
        )
        with self.engine.connect() as conn:
            return {(str(key), str(etag)) for key, etag in conn.execute(query)}

    def claim(self, obj: ObjectInfo) -> int:
        """Record the object (once) and count this attempt; the attempt number. A version
        gone before and listed again is `seen` again: taken, and failing, it backs off (left
        `skipped` with another error, it counted as handled and was never retried)."""
        self._add_objects([obj], ObjectStatus.SEEN, None)
        table = _table(BucketObject)
        mine = (table.c.key == obj.key) & (table.c.etag == obj.etag)
        with self.engine.begin() as conn:
            gone = table.c.error.startswith(GONE, autoescape=True)
            back = mine & (table.c.status == ObjectStatus.SKIPPED) & gone
            conn.execute(update(table).where(back).values(status=ObjectStatus.SEEN))
            conn.execute(update(table).where(mine).values(attempts=table.c.attempts + 1))
            return int(conn.execute(select(table.c.attempts).where(mine)).scalar_one())

    def mark_unlisted(self, listed: Sequence[ObjectInfo]) -> list[str]:
        """Mark gone the versions still `seen` (backing off, waiting to settle, or left by a
        pass that died) that the listing no longer has: deleted or overwritten before they
        were imported. They are taken again if listed again (`seen`). Their keys."""
        table = _table(BucketObject)
        query = select(table.c.id, table.c.key, table.c.etag).where(
            table.c.status == ObjectStatus.SEEN
        )
        present = {(obj.key, obj.etag) for obj in listed}
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        gone = [row for row in rows if (str(row.key), str(row.etag)) not in present]
        for chunk in _chunks([int(row.id) for row in gone], 500):
            with self.engine.begin() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.id.in_(chunk))
                    .values(
                        status=ObjectStatus.SKIPPED,
                        error=f"{GONE}no longer listed (deleted or overwritten)",
                        processed_at=utcnow(),
                        failing_since=None,
                        next_attempt_at=None,
                    )
                )
        return [str(row.key) for row in gone]

    def settling_since(self, obj: ObjectInfo) -> datetime | None:
        """When a listing first found the version as listed now (its size and LastModified
        unchanged since: `service.poller.settling`); None when none did."""
        table = _table(BucketObject)
        mine = (table.c.key == obj.key) & (table.c.etag == obj.etag)
        query = select(table.c.settling_since, table.c.size, table.c.last_modified).where(mine)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or (row.size, as_utc(row.last_modified)) != (obj.size, obj.last_modified):
            return None
        return as_utc(row.settling_since)

    def start_settling(self, obj: ObjectInfo, listed_at: datetime) -> None:
        self._update_object(
            obj, settling_since=listed_at, size=obj.size, last_modified=obj.last_modified
        )

    def record_skipped(self, skipped: Sequence[tuple[ObjectInfo, str]]) -> None:
        for obj, reason in skipped:
            self._add_objects([obj], ObjectStatus.SKIPPED, reason)

    def _add_objects(self, objs: Sequence[ObjectInfo], status: str, error: str | None) -> None:
        if not objs:
            return
        values = [
            {
                "key": obj.key,
                "etag": obj.etag,
                "size": obj.size,
                "last_modified": obj.last_modified,
                "status": status,
                "error": error,
                "first_seen": utcnow(),
                "rows": 0,
                "sent": 0,
                "failed": 0,
                "attempts": 0,
            }
            for obj in objs
        ]
        with self.engine.begin() as conn:
            conn.execute(self._insert(_table(BucketObject)), values)

    def insert_rows(self, obj: ObjectInfo, refs: Sequence[RowRef]) -> None:
        values = [
            {
                "identifier": ref.identifier,
                "object_key": obj.key,
                "etag": obj.etag,
                "row_number": ref.row_number,
                "event_name": (ref.event_name or "")[:MAX_EVENT_NAME] or None,
                "timestamp": bigint(ref.timestamp),
                "sent": ref.sent,
                "content": ref.content,
            }
            for ref in refs
            if recordable(ref.identifier)
        ]
        held = [value for value in values if not value["sent"]]
        sent = [value for value in values if value["sent"]]
        if values:
            with self.engine.begin() as conn:
                if held:
                    conn.execute(self._record_held(), held)
                if sent:
                    conn.execute(self._record_sent(), sent)

    def _record_held(self) -> Insert:
        """Rows not sent (index mode: every row): recorded with the first version that held
        each identifier; a later version of the object holding it too is named its latest
        (Stripe's connector takes that version whole: the row is taken again from it)."""
        table = _table(ImportedRow)
        return self._upsert_row({"latest_etag": "etag"}, table.c.etag != _excluded("etag"))

    def _record_sent(self) -> Insert:
        """Rows sent: recorded with this version, also where an earlier version of the object
        only held the identifier (its row failed validation, and was never sent): the version
        that sent it is the one another version must not send it again after
        (`service.poller.progress.OtherVersions`) and the one a report about it is about."""
        again = ("etag", "row_number", "event_name", "timestamp", "sent", "content")
        table = _table(ImportedRow)
        return self._upsert_row({name: name for name in again}, table.c.sent.is_(False))

    def _upsert_row(self, columns: dict[str, str], where: Any) -> Insert:
        """INSERT into imported_rows; a row already recorded for the identifier and object
        gets each column set from the new row's (`columns`: set -> from), where `where` holds
        (`_excluded(name)` names the new row's column in it)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_table(ImportedRow))
        statement: Insert = insert.on_conflict_do_update(
            index_elements=["identifier", "object_key"],
            set_={name: insert.excluded[source] for name, source in columns.items()},
            where=where,
        )
        return statement

    def _update_object(self, obj: ObjectInfo, **values: Any) -> None:
        table = _table(BucketObject)
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.key == obj.key, table.c.etag == obj.etag)
                .values(**values)
            )

    def mark_error(
        self,
        obj: ObjectInfo,
        reason: str,
        *,
        give_up: bool,
        failing_since: datetime,
        next_attempt_at: datetime | None,
    ) -> None:
        """The object stays `seen` and is taken again once `next_attempt_at` has passed,
        unless we give up: then it is `failed` until `meterfix poll --retry KEY`."""
        if give_up:
            self.mark_done(obj, ObjectStatus.FAILED)
        self._update_object(
            obj,
            error=reason[:2000],
            failing_since=failing_since,
            next_attempt_at=None if give_up else next_attempt_at,
        )

    def object_id(self, obj: ObjectInfo) -> int:
        table = _table(BucketObject)
        mine = (table.c.key == obj.key) & (table.c.etag == obj.etag)
        with self.engine.connect() as conn:
            return int(conn.execute(select(table.c.id).where(mine)).scalar_one())

    def mark_gone(self, obj: ObjectInfo, reason: str) -> None:
        """The version listed was gone when read (overwritten or deleted): skipped, yet taken
        if it is listed again (the same bytes put back: otherwise never read, its usage lost)."""
        self.mark_done(obj, ObjectStatus.SKIPPED)
        self.record_error(obj, f"{GONE}{reason}")

    def record_error(self, obj: ObjectInfo, reason: str) -> None:
        self._update_object(obj, error=reason[:2000])

    def defer(self, obj: ObjectInfo, until: datetime, reason: str) -> None:
        """Not taken yet (not a failure: no backoff counted): taken again after `until`."""
        self._update_object(
            obj,
            error=reason[:2000],
            next_attempt_at=until,
            attempts=_table(BucketObject).c.attempts - 1,
        )

    def reopen(self, obj: ObjectInfo) -> None:
        """`poll --retry`: take the object on the next pass, as if it never failed (its
        backoff starts again at 30 s: counted on, a failure after the retry waited 30 min)."""
        self._update_object(
            obj, status=ObjectStatus.SEEN, failing_since=None, next_attempt_at=None, attempts=0
        )

    def mark_done(self, obj: ObjectInfo, status: str, **counts: Any) -> None:
        self._update_object(
            obj,
            status=status,
            error=None,
            processed_at=utcnow(),
            failing_since=None,
            next_attempt_at=None,
            **counts,
        )

    def mark_indexed(self, obj: ObjectInfo, rows: int) -> None:
        """The upload indexed (a later one of the same bytes is read again: `uploaded_again`).
        A version the poller imported before a switch to `index`, read again for its new
        upload, stays `imported` with what it sent."""
        if self._status(obj) == ObjectStatus.IMPORTED:
            self.mark_done(obj, ObjectStatus.IMPORTED, last_modified=obj.last_modified)
            return
        self.mark_done(
            obj,
            ObjectStatus.INDEXED,
            rows=rows,
            sent=0,
            failed=0,
            import_set_id=None,
            last_modified=obj.last_modified,
        )

    def _status(self, obj: ObjectInfo) -> str:
        table = _table(BucketObject)
        mine = (table.c.key == obj.key) & (table.c.etag == obj.etag)
        with self.engine.connect() as conn:
            return str(conn.execute(select(table.c.status).where(mine)).scalar_one())

    def mark_unreadable(self, obj: ObjectInfo, reason: str, impset_id: str | None) -> None:
        self.mark_done(obj, ObjectStatus.FAILED, import_set_id=impset_id)
        self._update_object(obj, error=reason)


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _table(model: Any) -> Table:
    return table_of(model)


def _excluded(name: str) -> Any:
    """The new row's column `name` in an upsert's condition (`excluded.name`, on PostgreSQL
    and SQLite alike)."""
    return literal_column(f"excluded.{name}")


# --- what other rooms read ----------------------------------------------------------------


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
    rows = session.exec(
        select_model(ImportedRow)
        .where(col(ImportedRow.identifier).in_(identifiers))
        .order_by(col(ImportedRow.id))
    ).all()
    found: dict[str, ImportedRow] = {}
    for row in rows:
        found.setdefault(row.identifier, row)
    return found


def row_numbers(engine: Engine, key: str, identifiers: set[str]) -> dict[str, int]:
    """identifier -> its row number in the object `key`, for the rows the poller recorded."""
    with Session(engine) as session:
        found = session.exec(
            select_model(ImportedRow.identifier, ImportedRow.row_number).where(
                ImportedRow.object_key == key, col(ImportedRow.identifier).in_(identifiers)
            )
        ).all()
    return dict(found)


def lookup_batches(
    records: Iterator[UsageRecord], size: int = 1000
) -> Iterator[tuple[list[UsageRecord], set[str]]]:
    """The records `size` at a time, each batch with the identifiers of it the poller may
    have recorded, to look up in one query (NUL: never recorded, and PostgreSQL refuses it
    as a parameter)."""
    while batch := list(islice(records, size)):
        yield batch, {r.identifier for r in batch if r.identifier and recordable(r.identifier)}


def sent_moments(engine: Engine, identifiers: set[str]) -> dict[str, datetime]:
    """identifier -> when a version of some object that sent it first sent its batch (the
    latest such moment), for those of `identifiers` the poller sent: recorded as sent in a
    batch that was recorded (a batch is recorded before it goes out; a row recorded as sent
    outside any batch never went)."""
    if not identifiers:
        return {}
    rows, objects = _table(ImportedRow), _table(BucketObject)
    batches = _table(PollerBatch)
    version = and_(objects.c.key == rows.c.object_key, objects.c.etag == rows.c.etag)
    within = and_(
        batches.c.object_id == objects.c.id,
        batches.c.first_row <= rows.c.row_number,
        rows.c.row_number < batches.c.first_row + batches.c.rows,
    )
    query = (
        select(rows.c.identifier, batches.c.first_sent_at)
        .select_from(rows.join(objects, version).join(batches, within))
        .where(rows.c.identifier.in_(identifiers), rows.c.sent.is_(True))
    )
    with engine.connect() as connection:
        found = connection.execute(query).all()
    return latest((str(row.identifier), as_utc(row.first_sent_at)) for row in found)


class FirstVersion(NamedTuple):
    """The first object version the poller recorded a row with: the one that sent it, if
    any did (`sent`), and what the row held there (`content`: `remediation.rowdigest`, None when
    recorded before migration 0007)."""

    key: str
    etag: str
    sent: bool
    content: int | None

    @property
    def version(self) -> tuple[str, str]:
        return self.key, self.etag


def taken_since(engine: Engine, identifiers: set[str], since: datetime) -> set[str]:
    """Those of `identifiers` that an object version uploaded after `since` held: the first
    version the poller recorded them with, or the latest that held them too (Stripe's S3
    connector takes every version whole, so it took them again from it)."""
    if not identifiers:
        return set()
    rows, objects = _table(ImportedRow), _table(BucketObject)
    versions = and_(
        objects.c.key == rows.c.object_key,
        or_(objects.c.etag == rows.c.etag, objects.c.etag == rows.c.latest_etag),
    )
    query = (
        select(rows.c.identifier, objects.c.last_modified)
        .join(objects, versions)
        .where(rows.c.identifier.in_(identifiers))
    )
    with engine.connect() as connection:
        found = connection.execute(query).all()
    uploaded: list[tuple[str, datetime | None]] = [(str(r[0]), as_utc(r[1])) for r in found]
    return {identifier for identifier, at in uploaded if at is not None and at > since}


def first_versions(engine: Engine, identifiers: set[str]) -> dict[str, FirstVersion]:
    """identifier -> the first object version the poller recorded it with (a later version,
    or another object, that holds it too is taken for a copy: in import mode the poller leaves
    such rows out, `service.poller.progress.OtherVersions`)."""
    if not identifiers:
        return {}
    rows = _table(ImportedRow)
    query = (
        select(rows.c.identifier, rows.c.object_key, rows.c.etag, rows.c.sent, rows.c.content)
        .where(rows.c.identifier.in_(identifiers))
        .order_by(rows.c.id.desc())
    )
    with engine.connect() as connection:
        found = connection.execute(query).all()
    return {  # the first one last
        str(row.identifier): FirstVersion(
            str(row.object_key), str(row.etag), bool(row.sent), row.content
        )
        for row in found
    }


def objects_holding(engine: Engine, identifiers: set[str]) -> dict[str, str]:
    """object key -> the ETag we imported it at, for every object holding one of the rows."""
    with Session(engine) as session:
        rows = session.exec(
            select_model(ImportedRow.object_key, ImportedRow.etag).where(
                col(ImportedRow.identifier).in_(identifiers)
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
            select_model(ImportedRow.event_name).where(col(ImportedRow.identifier).in_(identifiers))
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
