"""What the poller records of the rows of an object version (imported_rows): the upserts that
decide which version each identifier is recorded with. `PollerStore`
(`service.poller.versions`) writes rows through this mixin; they are apart because these rules
are about rows, not the versions that hold them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Insert, Table, literal_column, update
from sqlalchemy.dialects import postgresql, sqlite

from remediation.poller import RowRef
from remediation.ports import ObjectInfo
from service.db.locks import Fence
from service.db.statements import in_listed
from service.models import ImportedRow
from service.models._types import table_of
from service.poller.store import recordable

MAX_EVENT_NAME = 255


def bigint(value: int | None) -> int | None:
    """`value` when a BIGINT holds it, else None: a timestamp of 20 digits is digits, not a
    time (the row fails validation), and would fail the whole file's insert."""
    return value if value is None or -(2**63) <= value < 2**63 else None


class ImportedRows:
    """`PollerStore`'s writes to imported_rows (a mixin: the store's engine is its own)."""

    engine: Engine
    fence: Fence  # first in each transaction recording rows (`PollerStore`)

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
                self.fence(conn)
                if held:
                    conn.execute(self._record_held(), held)
                if sent:
                    conn.execute(self._record_sent(), sent)

    def mark_not_sent(self, obj: ObjectInfo, identifiers: Sequence[str]) -> None:
        """Record rows of the object version as not sent (recorded as sent in a batch Stripe
        never acknowledged, they failed validation on a later pass and went to remediation)."""
        identifiers = [i for i in identifiers if recordable(i)]
        if not identifiers:
            return
        table = _table(ImportedRow)
        with self.engine.begin() as conn:
            self.fence(conn)
            conn.execute(
                update(table)
                .where(table.c.object_key == obj.key, table.c.etag == obj.etag)
                .where(in_listed(table.c.identifier, identifiers, self.engine, "identifiers"))
                .values(sent=False)
            )

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
        (`service.poller.other_versions.OtherVersions`) and the one a report about it is about."""
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


def _table(model: Any) -> Table:
    return table_of(model)


def _excluded(name: str) -> Any:
    """The new row's column `name` in an upsert's condition (`excluded.name`, on PostgreSQL
    and SQLite alike)."""
    return literal_column(f"excluded.{name}")
