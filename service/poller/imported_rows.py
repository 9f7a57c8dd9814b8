"""What the poller records of the rows of an object version (imported_rows): the upserts that
decide which version each identifier is recorded with. `PollerStore`
(`service.poller.versions`) writes rows through this mixin; they are apart because these rules
are about rows, not the versions that hold them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, Insert, Table, case, literal_column, update
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
        listed = in_listed(table.c.identifier, identifiers, self.engine, "identifiers")
        with self.engine.begin() as conn:
            self.fence(conn)
            conn.execute(
                update(table)
                .where(table.c.object_key == obj.key, table.c.etag == obj.etag, listed)
                .values(sent=False)
            )
            conn.execute(  # nor sent again by it (`_record_sent`)
                update(table)
                .where(table.c.object_key == obj.key, table.c.resent_etag == obj.etag, listed)
                .values(resent_etag=None, resent_row=None, resent_content=None)
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
        (`service.poller.other_versions.OtherVersions`). Where an earlier version sent it
        too (Stripe refused it, fixed by hand since), that one stays and this one is named
        the row's latest send (`resent_etag`, `resent_row`, `resent_content`): a report about
        it is about this send (`service.poller.store.sent_moments`, `sent_by_version`,
        `FirstVersion.latest`)."""
        again = ("etag", "row_number", "event_name", "timestamp", "sent", "content")
        table = _table(ImportedRow)
        first = table.c.sent.is_(False)  # no version sent it yet: this one is the first
        columns: dict[str, Any] = {
            name: case((first, _excluded(name)), else_=table.c[name]) for name in again
        }
        columns["resent_etag"] = case((first, table.c.resent_etag), else_=_excluded("etag"))
        columns["resent_row"] = case((first, table.c.resent_row), else_=_excluded("row_number"))
        columns["resent_content"] = case(
            (first, table.c.resent_content), else_=_excluded("content")
        )
        return self._upsert_row(columns, first | (table.c.etag != _excluded("etag")))

    def _upsert_row(self, columns: dict[str, Any], where: Any) -> Insert:
        """INSERT into imported_rows; a row already recorded for the identifier and object
        gets each column set (`columns`: set -> a column of the new row's by name, or an
        expression), where `where` holds (`_excluded(name)` names the new row's column)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_table(ImportedRow))
        statement: Insert = insert.on_conflict_do_update(
            index_elements=["identifier", "object_key"],
            set_={
                name: insert.excluded[source] if isinstance(source, str) else source
                for name, source in columns.items()
            },
            where=where,
        )
        return statement


def _table(model: Any) -> Table:
    return table_of(model)


def _excluded(name: str) -> Any:
    """The new row's column `name` in an upsert's condition (`excluded.name`, on PostgreSQL
    and SQLite alike)."""
    return literal_column(f"excluded.{name}")
