"""One remediation run in the service: engine -> bucket -> database, exactly once per run key.

A run has a deterministic `run_key`. A finished run is never redone, so re-delivered events
change nothing. An unfinished run (the process died half-way) is redone from the start:
outputs are deterministic, identical objects are not uploaded twice, an object of other bytes
at one of its keys (an earlier try's, made under other rules, meters or release) is never
replaced (`OutputKeyTaken`), and the run's audit rows are replaced. Outputs of a run go to
`<corrected prefix><tag>/...` and `<quarantine prefix><tag>/...`, so two runs over the same
source never overwrite each other; a redo uses the tag its first try recorded.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine

from remediation.engine import RemediationResult, remediate
from remediation.errors import MeterfixError
from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage
from remediation.meters import Meter
from remediation.outcomes import QuarantinedRow as Quarantined
from remediation.outputs import PlannedOutput, output_name, source_stem
from remediation.ports import Bucket, CustomerDirectory, CustomerRecords, LeavesOut, ObjectInfo
from remediation.records import UsageRecord
from remediation.repair import InputPlan
from remediation.rules import Rules
from service.adapters.bucket import file_digests, output_key
from service.adapters.bucket_base import SHA_KEY, is_identical
from service.config import Settings
from service.db.locks import Fence, HeldLock, unfenced
from service.errors import OutputKeyTaken
from service.jobs.stages import Stage, Stages
from service.jobs.store.loads import AuditStage, QuarantineStage
from service.jobs.store.runs import fail_run, finish_run, finished_run, start_run_in
from service.logs import log_event
from service.models import OutputKind, RemediationRun, RunTrigger
from service.models._types import utcnow
from service.notify.runs import alert_for_run, alert_for_run_again

# The parts of a run's database stage (`_AuditWriter.parts`, logged as `database_parts`).
PARTS = ("audit_staging", "audit_load", "quarantine_staging", "quarantine_load")


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


def run_done(ctx: RunContext, run_key: str) -> RemediationRun | None:
    """The run of `run_key` when it is done, with its alert: a crash between the run's end
    and its alert lost the alert for good, a retry finding the run done and going on
    (`alert_for_run_again` raises it unless it exists)."""
    done = finished_run(ctx.engine, run_key)
    if done is not None:
        alert_for_run_again(ctx.engine, ctx.settings, done)
    return done


def execute_run(
    ctx: RunContext,
    request: RunRequest,
    records: Iterable[UsageRecord],
    leave_out: Sequence[LeavesOut] = (),
    finishing: Callable[[Connection, int], None] | None = None,
) -> RemediationRun:
    """Remediate `records`, upload the outputs, record everything (and what `finishing`
    writes, in the transaction that records the run done); idempotent per run key. Under
    locks (`ctx.locks`) that are lost meanwhile: `LockLost` before an upload, or in a
    transaction of its results, which then commits nothing (the run is failed, and redone by
    its retry)."""
    done = run_done(ctx, request.run_key)
    if done is not None:
        return done
    stages = request.stages
    with stages.timing(Stage.DATABASE):
        run_id, tag = start_run_in(
            ctx.engine,
            request.run_key,
            request.trigger,
            request.source,
            request.generation,
            request.input_generation,
            ctx.task_id,
            request.tag,
        )
    # a redo writes where its first try did (`RemediationRun.output_tag`): an error report's
    # folder per object, named again, may be another (a peer of the same stem found since)
    request = replace(request, tag=tag or request.tag)
    uploaded: list[dict[str, Any]] = []  # as each output reaches the bucket
    try:
        with (
            tempfile.TemporaryDirectory(prefix="meterfix-run-") as tmp,
            _AuditWriter(ctx.engine, run_id, request.source, stages) as audit,
        ):
            with stages.timing(Stage.REMEDIATE):
                result = _remediate_request(ctx, request, records, Path(tmp), audit, leave_out)
            outputs = list(result.outputs) + ([result.audit] if result.audit else [])
            _upload_while_loading(ctx, request, outputs, audit, stages, uploaded)
    except Exception as exc:  # the run's try ends here: say so on the run, then as before
        # with the objects it did upload: a corrected one is in the bucket, imported (billed)
        # whatever became of the run, and the run page listed none until a replay
        _record_failure(ctx.engine, run_id, exc, uploaded)
        raise
    try:
        with stages.timing(Stage.DATABASE):
            run = finish_run(ctx.engine, run_id, result.summary, uploaded, ctx.fence, finishing)
    except Exception as exc:  # its lock or lease lost at the last commit: failed, not running
        _record_failure(ctx.engine, run_id, exc, uploaded)
        raise
    _log_run_done(run, stages, audit)
    alert_for_run(ctx.engine, ctx.settings, run, uploaded)  # critical/warning/info per run
    return run


def _record_failure(
    engine: Engine, run_id: int, exc: Exception, uploaded: Sequence[Mapping[str, Any]]
) -> None:
    """`fail_run` with the outputs it uploaded, or a log line when that fails too (the
    database gone): the run's own error is what the caller raises, not this one."""
    try:
        fail_run(engine, run_id, _error_text(exc), uploaded)
    except Exception as failed:  # a loop edge: the item's error is raised after it
        log_event(
            "remediation.run_failure_unrecorded",
            level=logging.WARNING,
            run_id=run_id,
            error=type(failed).__name__,
        )


def _error_text(exc: Exception) -> str:
    """What the run page says of a try that ended in `exc` (as the inbox row says it)."""
    return exc.reason if isinstance(exc, MeterfixError) else f"{type(exc).__name__}: {exc}"


def _remediate_request(
    ctx: RunContext,
    request: RunRequest,
    records: Iterable[UsageRecord],
    out_dir: Path,
    audit: _AuditWriter,
    leave_out: Sequence[LeavesOut],
) -> RemediationResult:
    """The engine's pass over `records` as `request` says, its outputs written under `out_dir`
    and its audit records handed to `audit` as it goes."""
    return remediate(
        records,
        source=request.source,
        fmt=request.fmt,
        meters=ctx.meters,
        # the poller's failed-records file holds its own validation's codes, not Stripe's
        rules=replace(ctx.rules, codes_ours=request.trigger is RunTrigger.POLLER),
        now=request.now,
        out_dir=out_dir,
        generation=request.generation,
        customers=ctx.customers,
        on_audit=audit.add,
        columns=request.columns,
        lineage=request.lineage,
        rejected=request.rejected,
        loop_protection=request.loop_protection,
        audit_output=True,  # uploaded with the outputs
        leave_out=leave_out,
        plan=request.plan,
    )


def _log_run_done(run: RemediationRun, stages: Stages, audit: _AuditWriter) -> None:
    log_event(
        "remediation.run_done",
        run_key=run.run_key,
        input_rows=run.input_rows,
        valid=run.valid,
        corrected=run.corrected,
        quarantined=run.quarantined,
        stages=stages.fields(),
        database_parts=audit.parts(),
    )


class _AuditWriter:
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

    def __enter__(self) -> _AuditWriter:
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


def _upload_while_loading(
    ctx: RunContext,
    request: RunRequest,
    outputs: Sequence[PlannedOutput],
    audit: _AuditWriter,
    stages: Stages,
    uploaded: list[dict[str, Any]],
) -> None:
    """The outputs to the bucket (each appended to `uploaded` once there) while the run's
    audit and quarantined rows go into the database, on a thread of its own: the loads (~5 s
    for 900,000 corrections, sorting and indexing in the database) and the uploads (~4 s of
    network) wait on different things.
    Each upload comes after a check that the run's locks are held still. Before all of them
    and the load, the check that none would replace another object (`_refuse_replacing`):
    refused, nothing is loaded either (a failed run's quarantined rows would wait in
    quarantine, open to a re-run, beside the kept object holding them); a bucket that cannot
    be looked at fails the run as a failed upload does, after the load, uploading nothing.
    Either failing fails the run, after both have ended (the connections the loads use are
    closed only then); a redo starts the run again (its audit and quarantined rows replaced,
    identical objects not uploaded twice)."""
    try:
        _refuse_replacing(ctx, request, outputs, uploaded)
        unchecked: Exception | None = None
    except OutputKeyTaken:
        raise  # before the load: its rows would describe objects that are not in the bucket
    except Exception as exc:  # the bucket could not be looked at: nothing is uploaded unchecked
        unchecked = exc
    with ThreadPoolExecutor(1, "meterfix-audit-load") as pool:  # its exit waits for the load
        loading = pool.submit(audit.finish, ctx.fence)
        with stages.timing(Stage.UPLOAD):
            if unchecked is not None:
                raise unchecked  # the run fails once the load has ended, as an upload's would
            for output in outputs:
                ctx.check_locks()  # a corrected object is imported: billed
                uploaded.append(_upload(ctx, request, output))
        stages.add(Stage.DATABASE, loading.result())


def _upload(ctx: RunContext, request: RunRequest, output: PlannedOutput) -> dict[str, Any]:
    key = _key(ctx, request, output)
    uploaded = ctx.bucket.upload(output.path, key, output.metadata)
    log_event("remediation.output", kind=output.kind, key=key, rows=output.rows, new=uploaded)
    return _output_row(request, output.kind, key, output.rows, output.sha256, uploaded)


def _key(ctx: RunContext, request: RunRequest, output: PlannedOutput) -> str:
    return output_key(ctx.settings, ctx.bucket, output.kind, output.path.name, request.tag)


def _output_row(
    request: RunRequest, kind: str, key: str, rows: int, sha256: str, uploaded: bool
) -> dict[str, Any]:
    """An `OutputObject` of the run, as `fail_run` and `finish_run` record it."""
    return {
        "kind": OutputKind(kind),
        "key": key,
        "rows": rows,
        "sha256": sha256,
        "generation": request.generation,
        "source": request.source,
        "uploaded": uploaded,
    }


def _refuse_replacing(
    ctx: RunContext,
    request: RunRequest,
    outputs: Sequence[PlannedOutput],
    uploaded: list[dict[str, Any]],
) -> None:
    """`OutputKeyTaken`, before anything is uploaded, when a key of the run's corrected outputs
    holds other bytes, or a corrected object of the run's names is in the bucket that this try
    does not make (its rows quarantined now, fewer parts): an earlier try of the run (it
    crashed, or failed, after that upload) made them under other rules, customer map, meters or
    release. Stripe's connector (MFX_POLLER off or index) imports an object again when it is
    replaced: its rows would go out again under the same identifiers (billed twice past
    Stripe's ~24 h dedupe window), and those the object held but this try does not would stay
    billed with no record of them. Kept instead, the run's counts and audit would describe rows
    that are not in the bucket. So the run fails, not retried (a person must look), with the
    objects in the bucket as its outputs: `uploaded` gets them (uploaded: false, as the
    bucket's lineage describes them). Quarantine and audit files (under the quarantine prefix:
    `output_key`) are never imported: replaced, they describe the run's rows."""
    taken: list[str] = []
    unmade: list[str] = []  # of the run's names, made by no output of this try
    held: list[dict[str, Any]] = []
    planned = {_key(ctx, request, output) for output in outputs}
    for listed in _corrected_of_run(ctx, request):  # those this try does not make, too
        if listed.key in planned:
            continue  # checked below, against the bytes this try makes
        unmade.append(listed.key)
        info = ctx.bucket.head(listed.key) or listed
        sha = info.metadata.get(SHA_KEY, "")[:64]
        held.append(
            _output_row(request, OutputKind.CORRECTED, listed.key, _rows_of(info), sha, False)
        )
    for output in outputs:
        key = _key(ctx, request, output)
        existing = ctx.bucket.head(key)
        if existing is None:
            continue
        imported = output.kind == OutputKind.CORRECTED  # the others: the quarantine prefix
        if not imported or is_identical(existing, *file_digests(output.path)):
            held.append(_output_row(request, output.kind, key, output.rows, output.sha256, False))
            continue
        taken.append(key)
        sha = existing.metadata.get(SHA_KEY, "")[:64]
        held.append(_output_row(request, output.kind, key, _rows_of(existing), sha, False))
    if taken or unmade:
        uploaded.extend(held)
        log_event(
            "remediation.output_taken",
            level=logging.WARNING,
            run_key=request.run_key,
            keys=unmade + taken,
        )
        raise OutputKeyTaken(_taken_reason(taken, unmade))


def _taken_reason(taken: Sequence[str], unmade: Sequence[str]) -> str:
    """What the operator is told of the kept objects: one at a key this try writes may be
    removed to have the try's output sent in its place; one this try makes nothing in place
    of may not: its rows went out (probably billed) and this try holds them in quarantine,
    so removing it undoes nothing, and a replay then ends done with those rows waiting for
    a re-run that bills them again."""
    reasons: list[str] = []
    if taken:
        reasons.append(
            f"{'; '.join(taken)}: already holds another object than this run's try makes "
            "(an earlier try of the run uploaded it, under other rules, meters or release): "
            "it may have been imported (billed), and meterfix never replaces an output that "
            "may have been; nothing was uploaded. Check what was imported from it; remove it "
            "only to have this try's output sent in its place (under the same identifiers)"
        )
    if unmade:
        reasons.append(
            f"{'; '.join(unmade)}: an earlier try of the run uploaded it, and this try makes "
            "no object in its place (it quarantines those rows now, under other rules, meters "
            "or release); nothing was uploaded. It was probably imported: its rows billed "
            "already. Removing it undoes nothing and nothing would be sent in its place: keep "
            "it, and do not re-run its rows (under the identifiers it holds, less their -mfxN "
            "suffix): a replay after removing it ends with them quarantined, and a quarantine "
            "re-run bills them again"
        )
    return ". ".join(reasons)


def _corrected_of_run(ctx: RunContext, request: RunRequest) -> Iterator[ObjectInfo]:
    """The corrected objects in the bucket that a try of this run writes (one listing of the
    run's folder): named `<stem>.corrected.r<generation>` (`.layoutN`, `.partNNNN`) and a
    format's extension, exactly as `output_name` names the run's source's outputs, directly
    in the run's folder (a peer object's outputs in a folder under it are not this run's)."""
    folder = output_key(ctx.settings, ctx.bucket, OutputKind.CORRECTED, "", request.tag)
    stem = source_stem(request.source)
    pattern = re.compile(
        rf"(?P<stem>.+)\.corrected\.r{request.generation}(?:\.layout(?P<layout>\d+))?"
        rf"(?:\.part(?P<part>\d{{4}}))?\.(?P<fmt>{'|'.join(f.value for f in FileFormat)})"
    )
    for info in ctx.bucket.list_objects(folder[len(ctx.bucket.prefix) :]):
        name = info.key[len(folder) :] if info.key.startswith(folder) else ""
        found = pattern.fullmatch(name)
        if found is None:
            continue
        layout, part = found["layout"], found["part"]
        ours = output_name(
            stem,
            OutputKind.CORRECTED.value,
            request.generation,
            FileFormat(found["fmt"]),
            int(layout) if layout is not None else 1,
            int(part) if part is not None else None,
        )
        if name == ours:
            yield info


def _rows_of(existing: ObjectInfo) -> int:
    """The rows an object's lineage says it holds (0 when it says nothing readable)."""
    rows = existing.metadata.get("mfx-rows", "")
    return int(rows) if rows.isascii() and rows.isdigit() and len(rows) < 10 else 0
