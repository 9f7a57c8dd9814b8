"""A run's audit and quarantined rows on their way to the database (`AuditWriter`).

The engine hands them over batch by batch as it runs: they are staged as they come and
loaded sorted at the end, beside the run's uploads (`run_outputs.upload_while_loading`),
each part of that database stage timed (`PARTS`, logged as `database_parts`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine

from remediation.outcomes import QuarantinedRow as Quarantined
from service.db.locks import Fence, unfenced
from service.jobs.stages import Stage, Stages
from service.jobs.store.loads import AuditStage, QuarantineStage
from service.models._types import utcnow

# The parts of a run's database stage (`AuditWriter.parts`, logged as `database_parts`).
PARTS = ("audit_staging", "audit_load", "quarantine_staging", "quarantine_load")


class AuditWriter:
    """Takes the engine's audit records as it hands them over: corrections and quarantined
    rows are staged (`AuditStage`, `QuarantineStage`) and loaded sorted by `finish`."""

    def __init__(self, engine: Engine, run_id: int, source: str, stages: Stages) -> None:
        self.stages = stages
        # Where the database stage's time went (seconds; logged with the run beside `stages`):
        # rows staged as they come, loaded sorted at the end.
        self.seconds = dict.fromkeys(PARTS, 0.0)
        with stages.timing(Stage.DATABASE):
            self.stage = AuditStage(engine, run_id, source)
            self.quarantine = QuarantineStage(engine, run_id, source)

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.stages.timing(Stage.DATABASE):
            self.stage.close()
            self.quarantine.close()

    def add(self, corrections: pa.RecordBatch, quarantined: Sequence[Quarantined]) -> None:
        with self.stages.timing(Stage.DATABASE), self._timing("audit_staging"):
            self.stage.add(corrections)
        if quarantined:
            now = utcnow()  # one per batch: the database encodes it once (`db.bulk._encoded`)
            rows = [self._quarantined(row, now) for row in quarantined]
            with self.stages.timing(Stage.DATABASE), self._timing("quarantine_staging"):
                self.quarantine.add(rows)

    def _quarantined(self, quarantined: Quarantined, now: datetime) -> tuple[Any, ...]:
        """The row in full (JSON text, as the quarantine file holds it), with its meter (event
        name) and customer copied out by the engine: a tuple of `QUARANTINE_COLUMNS`."""
        meter, customer = quarantined.meter, quarantined.customer
        return (
            quarantined.source,
            quarantined.row,
            quarantined.identifier,
            quarantined.code,
            quarantined.reason,
            None if meter is None else meter[:255],
            None if customer is None else customer[:255],
            quarantined.record,
            now,
        )

    def finish(self, fence: Fence = unfenced) -> float:
        """The quarantined rows, then the corrections, into their tables, each transaction
        after `fence` (the run's locks held still); the seconds that
        took (timed here, not in `stages`: it runs beside the uploads). One after the other:
        loaded at the same time (a thread each), beside the uploads on two cores, the
        database stage of a `varied` run took 14.6 s instead of 12.8 s on SQLite, 16.9 s
        instead of 14.3 s on PostgreSQL."""
        start = time.perf_counter()
        with self._timing("quarantine_load"):
            self.quarantine.load(fence)
        with self._timing("audit_load"):
            self.stage.load(fence)
        return time.perf_counter() - start

    @contextmanager
    def _timing(self, part: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start

    def parts(self) -> dict[str, float]:
        """Seconds per part of the database stage, to the microsecond (a small run's parts
        take less than a millisecond)."""
        return {part: round(seconds, 6) for part, seconds in self.seconds.items()}
