"""The runs over the objects that hold rows of the object version being imported: its own key,
and the other keys whose versions hold the same usage under the same identifiers (copies of
the file, versions that sent them). Apart from `OtherVersions`: where it looks, not what it
decides."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from sqlalchemy import Engine, select

from service.db.statements import in_listed
from service.jobs.store.lineage import runs_correcting, written_among
from service.jobs.store.usage_stamps import usage_second
from service.models import RemediationRun
from service.models._types import table_of
from service.poller.progress import ROWS
from service.poller.store import recordable

# identifier -> the usage seconds (`usage_second`) this version's rows of it are at; an
# identifier not in it, or a None among its seconds: a row without a readable timestamp
Seconds = Mapping[str, set[int | None]]
RUNS = table_of(RemediationRun)


class CopyRuns:
    """`runs_correcting` of the object's key and of the keys of other objects holding its
    rows, each key's read once per import. A row a run over a copy corrected went out as
    `<id>-mfx1`: asking only the runs over the object's own key, the poller sent the row
    again under its own identifier from the day's file fixed by hand (billed twice). Another
    key's runs count for a row only when that key holds the same usage (`_same_usage`): an
    identifier used again days later in another file is other usage (asked by the identifier
    alone, it was left out as sent before, never billed)."""

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine, self.key = engine, key
        self._runs: dict[str, list[int]] = {}  # key -> runs_correcting(key)
        self._elsewhere: bool | None = None  # whether any run is over another source

    def of(self, keys: Iterable[str]) -> list[int]:
        """The runs over the object's key and over `keys`."""
        runs: set[int] = set()
        for key in {self.key, *keys}:
            if key not in self._runs:
                self._runs[key] = runs_correcting(self.engine, key)
            runs.update(self._runs[key])
        return sorted(runs)

    def written(
        self, identifiers: Sequence[str], seconds: Callable[[Collection[str]], Seconds]
    ) -> set[str]:
        """Which of `identifiers` a run over the object's key, or over another key holding
        the same usage under the identifier (sent or not: a copy whose row failed our checks
        there holds it unsent, its run corrected it), wrote to a corrected output
        (`written_among`). `seconds`: the usage seconds of this version's rows of some of
        these identifiers (asked only of those another key holds)."""
        holding = self.keys_holding(identifiers, seconds) if self._any_elsewhere() else {}
        by_keys: dict[frozenset[str], list[str]] = {}
        for identifier in identifiers:
            by_keys.setdefault(holding.get(identifier, frozenset()), []).append(identifier)
        written: set[str] = set()
        for keys, listed in by_keys.items():
            written |= written_among(self.engine, self.of(keys), listed)
        return written

    def keys_holding(
        self, identifiers: Sequence[str], seconds: Callable[[Collection[str]], Seconds]
    ) -> dict[str, frozenset[str]]:
        """identifier -> the keys of the other objects whose versions hold it as this
        version's rows hold its usage (one query by the imported rows' identifier index)."""
        listed = [identifier for identifier in identifiers if recordable(identifier)]
        if not listed:
            return {}
        query = (
            select(ROWS.c.identifier, ROWS.c.object_key, ROWS.c.timestamp)
            .where(in_listed(ROWS.c.identifier, listed, self.engine, "identifiers"))
            .where(ROWS.c.object_key != self.key)
        )
        with self.engine.connect() as conn:
            held = [(str(i), str(key), usage_second(ts)) for i, key, ts in conn.execute(query)]
        ours = seconds({identifier for identifier, _key, _second in held}) if held else {}
        found: dict[str, set[str]] = {}
        for identifier, key, second in held:
            if _same_usage(second, ours.get(identifier, {None})):
                found.setdefault(identifier, set()).add(key)
        return {identifier: frozenset(keys) for identifier, keys in found.items()}

    def _any_elsewhere(self) -> bool:
        """Whether a run over another source than the object's key exists (read once per
        import): with none, no other key's run corrected a row, and the look-up of the keys
        holding each batch's identifiers (some 12 ms a batch of 4,096 rows on PostgreSQL
        with 1M imported rows) is skipped."""
        if self._elsewhere is None:
            query = select(RUNS.c.id).where(RUNS.c.source != self.key).limit(1)
            with self.engine.connect() as conn:
                self._elsewhere = conn.execute(query).first() is not None
        return self._elsewhere


def _same_usage(held: int | None, seconds: set[int | None]) -> bool:
    """Whether another key's row at the usage second `held` is the usage of one of this
    version's rows at `seconds`: the same second (a timestamp in milliseconds read as the
    rules read it, `usage_second`; an identifier may be used again days later for other
    usage, Stripe deduping it for about 24 hours only), or a row without a readable timestamp
    on either side, which cannot be told from another (the same usage by the identifier
    alone, as `usage_stamps.sent_as_held` judges)."""
    return held is None or None in seconds or held in seconds
