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
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from remediation.engine import RemediationResult, remediate
from remediation.errors import MeterfixError
from remediation.ports import LeavesOut
from remediation.records import UsageRecord
from service.jobs.run_audit import AuditWriter
from service.jobs.run_context import RunContext, RunRequest
from service.jobs.run_outputs import upload_while_loading
from service.jobs.stages import Stage, Stages
from service.jobs.store.runs import fail_run, finish_run, finished_run, start_run_in
from service.logs import log_event
from service.models import RemediationRun, RunTrigger
from service.notify.runs import alert_for_run, alert_for_run_again


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
            AuditWriter(ctx.engine, run_id, request.source, stages) as audit,
        ):
            with stages.timing(Stage.REMEDIATE):
                result = _remediate_request(ctx, request, records, Path(tmp), audit, leave_out)
            outputs = list(result.outputs) + ([result.audit] if result.audit else [])
            upload_while_loading(ctx, request, outputs, audit, stages, uploaded)
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
    audit: AuditWriter,
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


def _log_run_done(run: RemediationRun, stages: Stages, audit: AuditWriter) -> None:
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
