"""How far the poller got with one object version: the batches it sent (when each was first
sent, when Stripe acknowledged it) and the contiguous acknowledged prefix a later pass resumes
after.

Several batches are in flight at once, so they may be acknowledged out of order;
`bucket_objects.acked_batches` only counts batches 0..n-1 that were ALL acknowledged (the
last one with no gap before it). The rows of those batches are never sent again: a pass skips
every row recorded as sent (`imported_rows.sent`, written before its batch goes out) before
the row the prefix ends at. Everything after it is sent again under the same identifiers,
but for a batch acknowledged past the prefix that the pass cuts the same: left out
(`ObjectProgress.acknowledged_as`), its rows billed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from remediation.ports import ObjectInfo
from service.db import is_postgres
from service.db.locks import Fence, unfenced
from service.db.statements import in_listed
from service.models import BucketObject, ImportedRow, ObjectStatus, PollerBatch
from service.models._types import as_utc, table_of
from service.poller.batch_sending import mark_first_sent, record_sent, recorded_cuts, sending_rows
from service.poller.object_progress import ObjectProgress, SentBatch, SentRow
from service.poller.store import recordable


def _table(model: Any) -> Table:
    return table_of(model)


OBJECTS = _table(BucketObject)
BATCHES = _table(PollerBatch)
ROWS = _table(ImportedRow)


class ProgressStore:
    """`fence`: first in each transaction recording what was sent and acknowledged (a
    pass's `HeldLock.fence`: raises `LockLost` once the poller lock is lost)."""

    def __init__(self, engine: Engine, *, fence: Fence = unfenced) -> None:
        self.engine, self.fence = engine, fence

    def load(self, obj: ObjectInfo) -> ObjectProgress:
        with self.engine.connect() as conn:
            row = _object_row(conn, obj)
            batches = _batches_from(conn, row.id, row.acked_batches - 1)
            # when the acknowledged prefix last grew: its batches' latest acknowledgement
            prefix = (BATCHES.c.object_id == row.id) & (BATCHES.c.batch_number < row.acked_batches)
            grown: datetime | None = conn.execute(
                select(func.max(BATCHES.c.acked_at)).where(prefix)
            ).scalar_one()
        return _object_progress(row, batches, as_utc(grown))

    def sent_rows_before(self, obj: ObjectInfo, resume_row: int) -> bytearray:
        """A bitmap of the rows before `resume_row` recorded as sent (one bit per row): sent
        first by this version, or again after an earlier version of the object
        (`imported_rows.resent_row`). Without the latter, such a row of a batch never
        acknowledged, failing our checks on the next pass, was never marked not sent:
        remediation held it for good as `identifier_taken`, naming its own row."""
        bitmap = bytearray(resume_row // 8 + 1)
        if resume_row <= 0:
            return bitmap
        sent, number = _sent_by(obj)
        query = select(number).where(sent, number < resume_row)
        with self.engine.connect() as conn:
            result = conn.execute(query.execution_options(yield_per=10_000))
            for row in map(int, result.scalars()):
                bitmap[row >> 3] |= 1 << (row & 7)
        return bitmap

    def sent_here(self, obj: ObjectInfo, identifiers: Sequence[str]) -> set[str]:
        """Which of `identifiers` this object version recorded as sent (first, or again after
        an earlier version of the object: `sent_rows_before`)."""
        identifiers = [i for i in identifiers if recordable(i)]
        if not identifiers:
            return set()
        query = select(ROWS.c.identifier).where(
            _sent_by(obj)[0], in_listed(ROWS.c.identifier, identifiers, self.engine, "identifiers")
        )
        with self.engine.connect() as conn:
            found: Iterable[object] = conn.execute(query).scalars()
            return set(map(str, found))

    def sent_elsewhere(self, obj: ObjectInfo, identifiers: Sequence[str]) -> list[SentRow]:
        """The rows of other object versions (another key, or this key before it was
        overwritten) recorded as sent under one of `identifiers` (`OtherVersions` decides
        which of them count)."""
        columns = (ROWS.c.identifier, OBJECTS.c.id, ROWS.c.row_number, ROWS.c.content)
        rows = self._elsewhere(obj, identifiers, columns, ROWS.c.sent.is_(True))
        return [SentRow(str(row[0]), int(row[1]), int(row[2]), row[3]) for row in rows]

    def indexed_elsewhere(
        self, obj: ObjectInfo, identifiers: Sequence[str]
    ) -> list[tuple[str, datetime]]:
        """(identifier, upload time) of the rows of other object versions the poller only
        indexed (`MFX_POLLER=index`: Stripe's connector imports them) holding one of
        `identifiers`: switched to `on`, a later version holding them must not bill them
        again (an indexed row counts as sent by no batch)."""
        columns = (ROWS.c.identifier, OBJECTS.c.last_modified, OBJECTS.c.first_seen)
        indexed = ROWS.c.sent.is_(False) & (OBJECTS.c.status == ObjectStatus.INDEXED)
        rows = self._elsewhere(obj, identifiers, columns, indexed)
        return [(str(row[0]), _utc(row[1] or row[2])) for row in rows]

    def _elsewhere(
        self, obj: ObjectInfo, identifiers: Sequence[str], columns: tuple[Any, ...], which: Any
    ) -> list[tuple[Any, ...]]:
        """`columns` of the rows of other object versions, joined to their version's object,
        holding one of `identifiers` and matching `which`."""
        identifiers = [i for i in identifiers if recordable(i)]
        if not identifiers:
            return []
        other = ~and_(ROWS.c.object_key == obj.key, ROWS.c.etag == obj.etag)
        version = and_(OBJECTS.c.key == ROWS.c.object_key, OBJECTS.c.etag == ROWS.c.etag)
        query = (
            select(*columns)
            .join(OBJECTS, version)
            .where(in_listed(ROWS.c.identifier, identifiers, self.engine, "identifiers"))
            .where(which, other)
        )
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    def batches_of(self, object_id: int) -> list[SentBatch]:
        """Every batch recorded for an object version, by first row."""
        query = select(BATCHES).where(BATCHES.c.object_id == object_id)
        with self.engine.connect() as conn:
            found = [_batch(row) for row in conn.execute(query.order_by(BATCHES.c.first_row))]
        return found

    def record_sending(
        self, object_id: int, batches: Sequence[tuple[int, int, int]], now: datetime
    ) -> tuple[set[int], set[int]]:
        """(number, first_row, rows) of batches about to be sent; the numbers of those not
        recorded before, and of those recorded before as the same cut and never acknowledged
        (a refusal of this send is a refusal of that one: the same rows). A batch sent before
        keeps its first send time (the 23 h horizon counts from there) but loses an earlier
        acknowledgement: it counts as acknowledged again only once this send is, so a batch
        cut differently on this pass (meters changed meanwhile) never moves the prefix."""
        if not batches:
            return set(), set()
        dialect = postgresql if is_postgres(self.engine) else sqlite
        values = sending_rows(object_id, batches, now)
        numbers = [n for n, _, _ in batches]
        with self.engine.begin() as conn:
            self.fence(conn)
            known = recorded_cuts(conn, object_id, numbers)
            new = set(numbers) - set(known)
            same = {n for n, f, r in batches if n in known and known[n] == (f, r, None)}
            record_sent(conn, dialect, values)
            mark_first_sent(conn, object_id, now)
        return new, same

    def forget_unsent(self, object_id: int, numbers: Iterable[int]) -> int:
        """Batches recorded for the first time on a pass that then stopped before they went
        out, or that Stripe refused (HTTP 400: nothing of the request was taken): none of their
        rows was billed, so their records go (a row recorded as sent outside any batch never
        went). Left recorded, they would count as delivered once their first send time is 23 h
        old, and a fixed version of the file would leave their rows out. How many went."""
        numbers = sorted(set(numbers))
        if not numbers:
            return 0
        with self.engine.begin() as conn:
            self.fence(conn)
            result = conn.execute(
                delete(BATCHES).where(
                    BATCHES.c.object_id == object_id,
                    BATCHES.c.batch_number.in_(numbers),
                    BATCHES.c.acked_at.is_(None),
                )
            )
        return int(result.rowcount or 0)

    def record_acks(self, object_id: int, numbers: Iterable[int], now: datetime) -> int:
        """Mark batches acknowledged and move the contiguous prefix; its new length."""
        acked_now = sorted(set(numbers))
        with self.engine.begin() as conn:
            self.fence(conn)
            if acked_now:
                conn.execute(
                    update(BATCHES)
                    .where(BATCHES.c.object_id == object_id)
                    .where(BATCHES.c.batch_number.in_(acked_now), BATCHES.c.acked_at.is_(None))
                    .values(acked_at=now)
                )
            acked = int(
                conn.execute(
                    select(OBJECTS.c.acked_batches).where(OBJECTS.c.id == object_id)
                ).scalar_one()
            )
            later: Iterable[int] = conn.execute(
                select(BATCHES.c.batch_number)
                .where(BATCHES.c.object_id == object_id, BATCHES.c.batch_number >= acked)
                .where(BATCHES.c.acked_at.is_not(None))
                .order_by(BATCHES.c.batch_number)
            ).scalars()
            for number in map(int, later):
                if number != acked:
                    break
                acked += 1
            conn.execute(
                update(OBJECTS).where(OBJECTS.c.id == object_id).values(acked_batches=acked)
            )
        return acked

    def object_label(self, object_id: int) -> tuple[str, str]:
        """(key, ETag) of an object version."""
        query = select(OBJECTS.c.key, OBJECTS.c.etag).where(OBJECTS.c.id == object_id)
        with self.engine.connect() as conn:
            key, etag = conn.execute(query).one()
        return str(key), str(etag)

    def stale_in_other_versions(
        self, obj: ObjectInfo, horizon: datetime
    ) -> list[tuple[int, str, SentBatch]]:
        """(object id, ETag, batch) of the batches other versions of `obj`'s key sent and
        Stripe never acknowledged, first sent at `horizon` or before: rows of this version
        they hold may or may not have been billed, and Stripe may no longer dedupe them."""
        query = (
            select(BATCHES, OBJECTS.c.etag)
            .join(OBJECTS, OBJECTS.c.id == BATCHES.c.object_id)
            .where(OBJECTS.c.key == obj.key, OBJECTS.c.etag != obj.etag)
            .where(BATCHES.c.acked_at.is_(None), BATCHES.c.first_sent_at <= horizon)
            .order_by(BATCHES.c.object_id, BATCHES.c.first_row)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(int(row.object_id), str(row.etag), _batch(row)) for row in rows]

    def oldest_unacked_in_other_versions(
        self, obj: ObjectInfo, horizon: datetime
    ) -> datetime | None:
        """When the oldest batch other versions of `obj`'s key sent, never acknowledged, was
        first sent, after `horizon`: rows of this version it may hold count as sent by it
        until the horizon (those first sent before it are past: `stale_in_other_versions`)."""
        query = (
            select(func.min(BATCHES.c.first_sent_at))
            .join(OBJECTS, OBJECTS.c.id == BATCHES.c.object_id)
            .where(OBJECTS.c.key == obj.key, OBJECTS.c.etag != obj.etag)
            .where(BATCHES.c.acked_at.is_(None), BATCHES.c.first_sent_at > horizon)
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar_one_or_none()
        return as_utc(found)

    def batch_count(self, object_id: int) -> int:
        with self.engine.connect() as conn:
            query = select(func.count()).where(BATCHES.c.object_id == object_id)
            return int(conn.execute(query).scalar_one())


def _sent_by(obj: ObjectInfo) -> tuple[Any, Any]:
    """(which imported_rows this object version sent: first, or again after an earlier
    version of its object, which keeps the row; the row's number in this version)."""
    again = ROWS.c.resent_etag == obj.etag
    first = and_(ROWS.c.etag == obj.etag, ROWS.c.sent.is_(True))
    number = case((again, ROWS.c.resent_row), else_=ROWS.c.row_number)
    return and_(ROWS.c.object_key == obj.key, or_(first, again)), number


def _object_row(conn: Connection, obj: ObjectInfo) -> Row[Any]:
    """The object version's record: its id, first sight, prefix and failures."""
    return conn.execute(
        select(
            OBJECTS.c.id,
            OBJECTS.c.first_seen,
            OBJECTS.c.acked_batches,
            OBJECTS.c.failing_since,
            OBJECTS.c.attempts,
        ).where(OBJECTS.c.key == obj.key, OBJECTS.c.etag == obj.etag)
    ).one()


def _batches_from(conn: Connection, object_id: int, first: int) -> list[SentBatch]:
    """The object version's batches numbered `first` and up, by number."""
    return [
        _batch(b)
        for b in conn.execute(
            select(BATCHES)
            .where(BATCHES.c.object_id == object_id)
            .where(BATCHES.c.batch_number >= first)
            .order_by(BATCHES.c.batch_number)
        )
    ]


def _object_progress(
    row: Row[Any], batches: list[SentBatch], prefix_grown_at: datetime | None = None
) -> ObjectProgress:
    """The progress of an object version from its record and its batches from the one the
    acknowledged prefix ends with."""
    last = next((b for b in batches if b.number == row.acked_batches - 1), None)
    return ObjectProgress(
        object_id=int(row.id),
        first_seen=_utc(row.first_seen),
        acked_batches=int(row.acked_batches),
        resume_row=last.first_row + last.rows if last else 0,
        failing_since=as_utc(row.failing_since),
        attempts=int(row.attempts),
        unacked=tuple(b for b in batches if b.number >= row.acked_batches and b.acked_at is None),
        acked_beyond=tuple(
            b for b in batches if b.number >= row.acked_batches and b.acked_at is not None
        ),
        prefix_grown_at=prefix_grown_at,
    )


def _batch(row: Row[Any]) -> SentBatch:
    values = row._mapping
    return SentBatch(
        number=int(values["batch_number"]),
        first_row=int(values["first_row"]),
        rows=int(values["rows"]),
        first_sent_at=_utc(values["first_sent_at"]),
        acked_at=as_utc(values["acked_at"]),
    )


def _utc(value: datetime) -> datetime:
    moment = as_utc(value)
    assert moment is not None
    return moment
