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
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Engine

from remediation.ports import Bucket
from remediation.records import UsageRecord
from service.jobs.store import reports
from service.jobs.store.quarantine import mark_refused_again
from service.jobs.store.runs import handled_among, runs_correcting, runs_of_sources
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


class RefusedAgain(NamedTuple):
    """Stripe refused the rows again at `at`, from the object version `version` (a label)."""

    at: datetime
    version: str


class HandledElsewhere(LeftOut):
    """The rows without those another run over the same object corrected or quarantined
    (`left`: how many), looked up a batch at a time (no query at all when no other run took
    rows of the object: the common case).

    `refused`: the rows are Stripe's refusals of a version of the object (an import set's
    failed records). A row a run over the object quarantined before then, which Stripe now
    refused again, was taken again by the connector (it takes every version whole): a new
    refusal, not one handled. It is marked taken again (`again`: how many), as the poller does
    when it indexes the version (which, with MFX_POLLER=off or before it got to the version,
    it had not: the row was left out as handled, held with the old version's content, and the
    quarantine re-run then left it as billed since: never billed)."""

    def __init__(
        self,
        engine: Engine,
        bucket: Bucket,
        key: str | None,
        run_key: str,
        refused: RefusedAgain | None = None,
    ) -> None:
        self.engine, self.key, self.refused, self.again = engine, key, refused, 0
        sources = object_sources(engine, bucket, key)
        self.runs = runs_of_sources(engine, sources, run_key)
        # the re-runs that took their quarantined rows too (quarantined again there)
        self.chain = runs_correcting(engine, sources) if self.runs and refused else []

    def __call__(self, records: Iterator[UsageRecord]) -> Iterator[UsageRecord]:
        return super().__call__(records) if self.runs else records

    def excluded(self, identifiers: set[str]) -> set[str]:
        listed = sorted(identifiers)
        if self.refused is not None:
            at, version = self.refused
            self.again += mark_refused_again(self.engine, self.chain, listed, version, at)
        return handled_among(self.engine, self.runs, listed)

    def outcome(self) -> str:
        again = (
            f"; {self.again} quarantined before refused again (marked taken again): "
            "remediated from this version"
            if self.again
            else ""
        )
        if not self.left:
            return again
        log_event(
            "remediation.rows_handled_elsewhere",
            level=logging.WARNING,
            rows=self.left,
            key=self.key,
        )
        return again + (
            f"; {self.left} left out: another run over {self.key} corrected or quarantined them"
        )


__all__ = ["HandledElsewhere", "LeftOut", "RefusedAgain", "object_sources"]
