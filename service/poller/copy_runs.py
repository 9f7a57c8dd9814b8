"""The runs over the objects that hold rows of the object version being imported: its own key,
and the other keys whose versions hold the same identifiers (copies of the file, versions
that sent them). Apart from `OtherVersions`: where it looks, not what it decides."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Engine, select

from service.db.statements import in_listed
from service.jobs.store.lineage import runs_correcting
from service.poller.progress import ROWS
from service.poller.store import recordable


class CopyRuns:
    """`runs_correcting` of the object's key and of the keys of other objects holding its
    rows, each key's read once per import. A row a run over a copy corrected went out as
    `<id>-mfx1`: asking only the runs over the object's own key, the poller sent the row
    again under its own identifier from the day's file fixed by hand (billed twice)."""

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine, self.key = engine, key
        self._runs: dict[str, list[int]] = {}  # key -> runs_correcting(key)

    def of(self, keys: Iterable[str]) -> list[int]:
        """The runs over the object's key and over `keys`."""
        runs: set[int] = set()
        for key in {self.key, *keys}:
            if key not in self._runs:
                self._runs[key] = runs_correcting(self.engine, key)
            runs.update(self._runs[key])
        return sorted(runs)

    def holding(self, identifiers: Sequence[str]) -> list[int]:
        """The runs over the object's key and over the other keys whose versions hold one
        of `identifiers`, sent or not (`imported_rows`: a copy whose row failed our checks
        there holds it unsent, its run corrected it)."""
        return self.of(self.keys_holding(identifiers))

    def keys_holding(self, identifiers: Sequence[str]) -> set[str]:
        """The keys of the other objects whose versions hold one of `identifiers` (one
        query by the imported rows' identifier index)."""
        listed = [identifier for identifier in identifiers if recordable(identifier)]
        if not listed:
            return set()
        query = (
            select(ROWS.c.object_key)
            .where(in_listed(ROWS.c.identifier, listed, self.engine, "identifiers"))
            .where(ROWS.c.object_key != self.key)
            .distinct()
        )
        with self.engine.connect() as conn:
            found: Iterable[object] = conn.execute(query).scalars()
            return set(map(str, found))
