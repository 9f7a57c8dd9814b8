"""Where a remediation run spends its time: download, lineage, remediate, upload, database.

Logged with the run (`remediation.run_done`, field `stages`, seconds) so an operator sees why a
run was slow, and read by bench/service_path.py. Stages nest: the audit rows the engine hands
over while it runs are written to the database inside the remediation stage, and that time
counts as database time only. The run's audit is loaded while its outputs are uploaded (on a
thread of its own, `add`): both count in full. The database stage's parts (corrections and
quarantined rows staged, and their loads) are logged beside the stages (`database_parts`,
`jobs/run_audit.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum


class Stage(StrEnum):
    DOWNLOAD = "download"  # the input from Stripe's Files API or the bucket
    LINEAGE = "lineage"  # which identifiers of the input we wrote (a pass over it + lookups)
    REMEDIATE = "remediate"  # classify, correct, write the output files
    UPLOAD = "upload"  # the outputs to the bucket
    DATABASE = "database"  # the run's row, its audit and quarantined rows, its outputs


class Stages:
    def __init__(self) -> None:
        self.seconds: dict[Stage, float] = dict.fromkeys(Stage, 0.0)
        self._open: list[list[float]] = []  # [time spent in inner stages] per open stage

    @contextmanager
    def timing(self, stage: Stage) -> Iterator[None]:
        inner = [0.0]
        self._open.append(inner)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._open.pop()
            self.seconds[stage] += elapsed - inner[0]
            if self._open:
                self._open[-1][0] += elapsed  # the enclosing stage does not count it again

    def add(self, stage: Stage, seconds: float) -> None:
        """Time spent in `stage` on another thread, alongside the stages timed here (the
        stages then add up to more than the run's wall time)."""
        self.seconds[stage] += seconds

    def fields(self) -> dict[str, float]:
        """Seconds per stage that took any time, rounded to milliseconds."""
        return {str(stage): round(s, 3) for stage, s in self.seconds.items() if s > 0}
