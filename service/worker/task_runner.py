"""Runs the remediation tasks the worker claims, with the adapters of its Runtime."""

from __future__ import annotations

from service.errors import RerunInputMissing
from service.jobs.quarantine_rerun import rerun_quarantine
from service.jobs.remediation import JobDeps, run_task
from service.jobs.runs import RunContext
from service.runtime import Runtime
from service.worker.tasks import TaskKind


class TaskRunner:
    """Runs remediation tasks for the worker; adapters come from the Runtime, meters per task."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, kind: TaskKind, ref: str) -> str:
        rt = self.runtime
        context = RunContext(
            engine=rt.engine,
            settings=rt.settings,
            bucket=rt.bucket,
            meters=list(rt.meter_source.meters()),
            rules=rt.rules,
            customers=rt.customers if rt.rules.policy.customer_metadata_key else None,
        )
        if kind is TaskKind.QUARANTINE_RERUN:
            try:
                return rerun_quarantine(context, ref)
            except RerunInputMissing as exc:  # not retried: nothing names the rows any more
                return f"not re-run: {exc}"
        return run_task(JobDeps(run=context, files=rt.file_store), kind, ref)
