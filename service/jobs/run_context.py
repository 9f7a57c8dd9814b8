"""What a remediation run is asked to do (`RunRequest`) and what it runs with (`RunContext`).

Apart from the run itself (`runs.execute_run`) so the jobs that build a run and the parts that
carry it out (`run_outputs`, the report and re-run modules) share them without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, Engine

from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage
from remediation.meters import Meter
from remediation.ports import Bucket, CustomerDirectory, CustomerRecords
from remediation.repair import InputPlan
from remediation.rules import Rules
from service.config import Settings
from service.db.locks import HeldLock
from service.jobs.stages import Stages
from service.models import RunTrigger


@dataclass(frozen=True)
class RunRequest:
    run_key: str
    trigger: RunTrigger
    source: str  # where the rows came from: a Stripe file id or a bucket key
    tag: str  # folder for this run's outputs inside the corrected/quarantine prefixes
    fmt: FileFormat
    now: int  # reference time: the event's time
    generation: int = 1
    columns: Sequence[str] | None = None
    lineage: Lineage | None = None  # which identifiers we wrote (remediation.identifiers)
    input_generation: int | None = None  # the generation `lineage` traced its input from
    rejected: bool = False  # every row was rejected by Stripe: valid rows are re-sent too
    loop_protection: bool = True  # off: an operator re-runs quarantined rows (remediate)
    plan: InputPlan | None = None  # how its input was read: its whole-file repairs
    # Time per stage, from the download on (logged with the run; never compared).
    stages: Stages = field(default_factory=Stages, compare=False)


@dataclass
class RunContext:
    engine: Engine
    settings: Settings
    bucket: Bucket
    meters: Sequence[Meter]
    rules: Rules
    customers: CustomerDirectory | None = None
    # whether Stripe ever made a customer: an error report's run asks it of a row sent again
    # changed that the report's samples do not name (`service.jobs.report_rows.SentAgain`)
    customer_records: CustomerRecords | None = None
    # around a job's wait for its turn (a re-run waits for the one before it): the worker
    # does not count it against the item's time limit (`service.worker.item_lease`)
    waiting_turn: Callable[[], AbstractContextManager[None]] = nullcontext
    task_id: str | None = None  # the worker's task running the job, named on its runs
    # the locks its runs are done under (`holding`): a run whose lock was lost (its database
    # connection dropped, and another process may hold it) uploads and commits nothing
    locks: tuple[HeldLock, ...] = ()

    def holding(self, lock: HeldLock) -> RunContext:
        """This context for runs done under `lock` too."""
        return replace(self, locks=(*self.locks, lock))

    def check_locks(self) -> None:
        """`LockLost` unless the run's locks are held still: before each upload."""
        for lock in self.locks:
            lock.check()

    def fence(self, connection: Connection) -> None:
        """`LockLost` unless the run's locks are held still: first in each transaction that
        commits the run's work (`HeldLock.fence`)."""
        for lock in self.locks:
            lock.fence(connection)
