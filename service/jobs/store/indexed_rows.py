"""The rows the bundled poller indexed (index mode: Stripe's S3 connector imports every object
version whole, the poller only records identifier -> (object, row)), as a quarantine re-run's
pick reads them: a quarantined row some object version taken after it holds was billed from
there, or refused again and quarantined anew."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, and_, select

from service.db.statements import in_listed
from service.models import BucketObject, ImportedRow, ObjectStatus
from service.models._types import as_utc, table_of

IMPORTED = table_of(ImportedRow)
OBJECTS = table_of(BucketObject)


class IndexedRow(NamedTuple):
    """A row of `identifier` the poller indexed: the version that held it first in its object
    (`key`, `etag`, when `uploaded`) and its timestamp there (as the poller read it, None
    without one)."""

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
    (refused by the poller) is no such row: its version is `imported`, not `indexed`."""
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
