"""The rows of an import set's file under an identifier a run over another object corrected or
quarantined (`HandledInOtherObjects`): held under `identifier_taken`, naming that object's
row. Apart from `later_rows.py` (rows a later version holds, left to Stripe's connector) and
`object_runs.py` (rows other runs over the same object handled).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Engine

from remediation.codes import ErrorCode
from remediation.ports import Bucket
from remediation.records import UsageRecord
from remediation.reported import handled_by_another
from service.jobs.inputs import candidate_keys
from service.jobs.object_runs import object_sources
from service.jobs.store.lineage import handled_under
from service.poller.store import held_since, lookup_batches, row_numbers

# every version the poller recorded, whenever it was uploaded
_ANY_TIME = datetime.min.replace(tzinfo=UTC)


class HandledInOtherObjects:
    """The records of an import set's file (`records_transform`), each under an identifier a
    run over another object the poller recorded holding it corrected (sent as `<id>-mfx<n>`)
    or quarantined (a re-run sends it so once fixed) handed on under `identifier_taken`
    (`codes.NEVER_RESENT`: quarantined, never corrected nor sent by a re-run), naming that
    object's row (the first key holding one), as a report's run holds such a row
    (`reported.handled_by_another`). Stripe keeps one event an identifier: day.csv's `k1` (a
    value written `1,234`) copied to day-fixed.csv by hand, still failing our checks (in
    milliseconds), and refused there too, went out corrected from each object's failed
    records (`k1-mfx1` twice: a duplicate, or billed twice past Stripe's dedupe), whichever
    run came first. Not a row held under `identifier_taken` there, or marked taken again:
    never sent (`lineage.handled_queries`). `held`: how many."""

    def __init__(self, engine: Engine, bucket: Bucket, key: str | None) -> None:
        self.engine, self.bucket = engine, bucket
        self.own = set(candidate_keys(bucket, key))
        self.held = 0

    def first_rows(self, identifiers: set[str]) -> dict[str, tuple[str, int]]:
        """identifier -> (key, row) of the first other object (by key) holding it whose run
        corrected or quarantined it, for those of `identifiers` one did."""
        by_key: dict[str, set[str]] = {}
        for identifier, keys in held_since(self.engine, identifiers, _ANY_TIME).items():
            for key in keys.keys() - self.own:
                by_key.setdefault(key, set()).add(identifier)
        found: dict[str, tuple[str, int]] = {}
        for key in sorted(by_key):
            asked = sorted(by_key[key] - found.keys())
            sources = object_sources(self.engine, self.bucket, key)
            handled = handled_under(self.engine, sources, asked) if asked else set()
            rows = row_numbers(self.engine, key, handled) if handled else {}
            found.update((i, (key, rows.get(i, 0))) for i in handled)
        return found

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        for batch, identifiers in lookup_batches(records):
            first = self.first_rows(identifiers) if identifiers else {}
            for record in batch:
                held = first.get(record.identifier or "")
                yield record if held is None else self._held(record, *held)

    def _held(self, record: UsageRecord, key: str, row: int) -> UsageRecord:
        self.held += 1
        record.error_code = ErrorCode.IDENTIFIER_TAKEN.value
        record.error_message = handled_by_another(record.identifier or "", key, row)
        return record
