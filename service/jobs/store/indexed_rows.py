"""The rows the bundled poller indexed (index mode: Stripe's S3 connector imports every object
version whole, the poller only records identifier -> (object, row)), as a quarantine re-run's
pick reads them: a quarantined row some object version taken after it holds was billed from
there, or refused again and quarantined anew."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, and_, or_, select

from remediation.core.columns import Column
from remediation.rownames import timestamps_of
from service.db.statements import in_listed
from service.jobs.store.usage_stamps import usage_second
from service.models import BucketObject, ImportedRow, ObjectStatus
from service.models._types import as_utc, table_of

IMPORTED = table_of(ImportedRow)
OBJECTS = table_of(BucketObject)

# what index mode records for a timestamp cell that reads as no time (`index_seconds`): no
# row's usage, never matched by its identifier alone (the BIGINT's least value)
UNREADABLE = -(2**63)
BIGINT_END = 2**63


def index_seconds(column: Column) -> list[int | None]:
    """Each row's timestamp as index mode records it (`service.poller.pass_objects`): digits
    as `timestamps_of` reads them (the common case: every cell of a usage CSV; ms, us and ns
    divided down when read, `usage_second`), any other cell in whole seconds as
    `usage_second` reads it (ISO-8601 with a zone, `1796656513.0`), `UNREADABLE` for a cell
    that reads as no time, None only for an empty cell: a row without a timestamp, the same
    usage by its identifier alone (`sent_as_held`). Before, an ISO-8601 or `1796656513.0`
    cell was recorded as none, and other usage under a quarantined row's identifier marked
    the row taken by the identifier alone (never billed)."""
    stamps = timestamps_of(column)
    if all(s is not None and -BIGINT_END <= s < BIGINT_END for s in stamps):
        return stamps
    cells = column.values()
    return [_recorded(stamp, cell) for stamp, cell in zip(stamps, cells, strict=True)]


def _recorded(stamp: int | None, cell: object) -> int | None:
    if stamp is not None and -BIGINT_END <= stamp < BIGINT_END:
        return stamp
    if cell is None or cell == "":
        return None
    second = usage_second(stamp if stamp is not None else cell)
    return UNREADABLE if second is None or not -BIGINT_END < second < BIGINT_END else second


class IndexedRow(NamedTuple):
    """A row of `identifier` the poller indexed: the version that held it first in its object
    (`key`, `etag`, when `uploaded`) and its timestamp there (as the poller read it,
    `index_seconds`; None without one)."""

    identifier: str
    key: str
    etag: str
    uploaded: datetime
    timestamp: int | None


def indexed_rows(
    connection: Connection, engine: Engine, identifiers: Sequence[str]
) -> dict[str, list[IndexedRow]]:
    """identifier -> the rows of it the poller indexed (an object version it recorded as
    indexed, whose upload time is known), for those of `identifiers` it did (by its
    identifier index). A row recorded with a version it was not sent from in import mode
    (refused by the poller) is no such row: its version is `imported`, not `indexed`; nor
    is a row whose timestamp reads as no time (`UNREADABLE`): no usage's second."""
    found: dict[str, list[IndexedRow]] = {}
    if not identifiers:
        return found
    version = and_(OBJECTS.c.key == IMPORTED.c.object_key, OBJECTS.c.etag == IMPORTED.c.etag)
    query = (
        select(
            IMPORTED.c.identifier,
            IMPORTED.c.object_key,
            IMPORTED.c.etag,
            IMPORTED.c.timestamp,
            OBJECTS.c.last_modified,
        )
        .select_from(IMPORTED.join(OBJECTS, version))
        .where(in_listed(IMPORTED.c.identifier, list(identifiers), engine))
        .where(OBJECTS.c.status == ObjectStatus.INDEXED, OBJECTS.c.last_modified.is_not(None))
        .where(or_(IMPORTED.c.timestamp.is_(None), IMPORTED.c.timestamp != UNREADABLE))
    )
    for row in connection.execute(query):
        uploaded = as_utc(row.last_modified)
        if uploaded is None:
            continue
        stamp = None if row.timestamp is None else int(row.timestamp)
        found.setdefault(str(row.identifier), []).append(
            IndexedRow(str(row.identifier), str(row.object_key), str(row.etag), uploaded, stamp)
        )
    return found
