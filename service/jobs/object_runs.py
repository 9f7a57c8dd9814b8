"""The runs over the rows of one bucket object, whichever way Stripe named them.

Stripe's S3 connector may name one refused row twice: in an import set's failed-records file
(a format problem) and in a meter error report about other rows of the object (a data problem
our validation finds first). The report's run has the object's key for source; the import
set's run has the failed-records file (the import set's `source_object` names the key). Each
run leaves out the rows any other run over the object corrected or quarantined: both would
write `<id>-mfx<n>`, and two corrected objects imported more than a day apart bill the row
twice (Stripe dedupes identifiers for 24 hours only); its quarantine would be doubled too.

An import set that names no object is linked to none: its rows are matched with no other
run's (by identifier alone, a row of another object that reuses the identifier a day later,
as Stripe allows, would be left out and never billed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy import Engine

from remediation.ports import Bucket
from remediation.records import UsageRecord
from service.jobs.store import reports
from service.jobs.store.runs import handled_among, runs_of_sources
from service.logs import log_event
from service.poller.store import lookup_batches


def object_sources(engine: Engine, bucket: Bucket, key: str | None) -> list[str]:
    """The sources of the runs over the rows of the object `key`: its names, and the
    failed-records files of the import sets that name it (`reports.object_sources`)."""
    return reports.object_sources(engine, bucket.prefix, key)


class LeftOut:
    """The records without those whose identifier `excluded` names (`left`: how many), asked
    a batch of identifiers at a time (`poller.store.lookup_batches`)."""

    left = 0

    def excluded(self, identifiers: set[str]) -> set[str]:
        raise NotImplementedError

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        for batch, identifiers in lookup_batches(records):
            excluded = self.excluded(identifiers)
            for record in batch:
                if record.identifier in excluded:
                    self.left += 1
                    continue
                yield record


class HandledElsewhere(LeftOut):
    """The rows without those another run over the same object corrected or quarantined
    (`left`: how many), looked up a batch at a time (no query at all when no other run took
    rows of the object: the common case)."""

    def __init__(self, engine: Engine, bucket: Bucket, key: str | None, run_key: str) -> None:
        self.engine, self.key = engine, key
        self.runs = runs_of_sources(engine, object_sources(engine, bucket, key), run_key)

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        return super().__call__(records) if self.runs else records

    def excluded(self, identifiers: set[str]) -> set[str]:
        return handled_among(self.engine, self.runs, sorted(identifiers))

    def outcome(self) -> str:
        if not self.left:
            return ""
        log_event(
            "remediation.rows_handled_elsewhere",
            level=logging.WARNING,
            rows=self.left,
            key=self.key,
        )
        return f"; {self.left} left out: another run over {self.key} corrected or quarantined them"


__all__ = ["HandledElsewhere", "LeftOut", "object_sources"]
