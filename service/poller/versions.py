"""The poller's own record of each object version (key + ETag) it listed: which a pass takes,
claims, lets settle, backs off, marks done, indexed or gone. Only the poller writes it; other
rooms read it through `service.poller.store`.

A version listed again (a retried object) is inserted with the dialect's ON CONFLICT DO
NOTHING, so SQLite and PostgreSQL behave the same; its rows are upserted
(`service.poller.imported_rows`: a duplicate identifier decides which version it is recorded
with), in bulk (one statement per group of batches), never one commit per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Insert, Table, select, update

from remediation.ports import ObjectInfo
from service.db.locks import Fence, unfenced
from service.db.statements import insert_or_ignore
from service.models import BucketObject, ObjectStatus
from service.models._types import as_utc, table_of, utcnow
from service.poller.imported_rows import ImportedRows

SAME_UPLOAD = timedelta(seconds=1)  # S3's LastModified resolution: later is another upload
GONE = "not imported: "  # the error of a version gone when read (`PollerStore.mark_gone`)
# statuses of a version read again when the same bytes are uploaded again (index mode)
READ_AGAIN = (ObjectStatus.INDEXED, ObjectStatus.IMPORTED)


class PollerStore(ImportedRows):
    """`fence`: first in each transaction recording an object's rows and outcome (a pass's
    `HeldLock.fence`: raises `LockLost` once the poller lock is lost)."""

    def __init__(self, engine: Engine, *, fence: Fence = unfenced) -> None:
        self.engine, self.fence = engine, fence

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

    def _update_object(self, obj: ObjectInfo, **values: Any) -> None:
        table = _table(BucketObject)
        with self.engine.begin() as conn:
            self.fence(conn)
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
        attempts: int | None = None,
    ) -> None:
        """The object stays `seen` and is taken again once `next_attempt_at` has passed,
        unless we give up: then it is `failed` until `meterfix poll --retry KEY`.
        `attempts`: the failing run started again (Stripe acknowledged batches of it)."""
        if give_up:
            self.mark_done(obj, ObjectStatus.FAILED)
        again = {} if attempts is None else {"attempts": attempts}
        self._update_object(
            obj,
            error=reason[:2000],
            failing_since=failing_since,
            next_attempt_at=None if give_up else next_attempt_at,
            **again,
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
