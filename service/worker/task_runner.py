"""Runs the remediation tasks the worker claims, with the adapters of its Runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediation.errors import UnreadableFile
from service.errors import RerunInputMissing, TaskInputMissing
from service.jobs.error_reports import remediate_error_report
from service.jobs.inputs import JobDeps
from service.jobs.quarantine_rerun import rerun_quarantine
from service.jobs.remediation import import_set_errors, import_set_failed, poller_rows
from service.jobs.run_context import RunContext
from service.jobs.store.reports import import_set
from service.notify.alerts import raise_alert, resolve_alert
from service.runtime import Runtime
from service.worker.item_lease import lease_as_lock, waiting_turn
from service.worker.tasks import TaskKind, task_id


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
            customers=rt.customer_directory() if rt.rules.policy.customer_metadata_key else None,
            customer_records=rt.customer_directory(),
            waiting_turn=waiting_turn,
            task_id=task_id(kind, ref),
            locks=lease_as_lock(),  # lost (another worker took the task), its runs stop
        )
        if kind is TaskKind.QUARANTINE_RERUN:
            try:
                return rerun_quarantine(context, ref)
            except RerunInputMissing as exc:  # not retried: nothing names the rows any more
                return f"not re-run: {exc}"
        return run_task(JobDeps(run=context, files=rt.file_store), kind, ref)


JOBS: dict[TaskKind, Callable[[JobDeps, str], str]] = {
    TaskKind.IMPORT_SET_ERRORS: import_set_errors,
    TaskKind.IMPORT_SET_FAILED: import_set_failed,
    TaskKind.POLLER_ROWS: poller_rows,
    TaskKind.ERROR_REPORT: remediate_error_report,
}


# the tasks whose ref is an import set's id
IMPORT_SET_TASKS = (TaskKind.IMPORT_SET_ERRORS, TaskKind.IMPORT_SET_FAILED, TaskKind.POLLER_ROWS)


def run_task(deps: JobDeps, kind: TaskKind, ref: str) -> str:
    """Run the task's job. An input that cannot be had ends the task with a critical alert
    (not retried: a person must look); a later run that succeeds (a replay once the input
    is back) resolves it."""
    job: Callable[[JobDeps, str], str] = JOBS[kind]
    key = input_alert_key(kind, ref)
    try:
        outcome = job(deps, ref)
    except (TaskInputMissing, UnreadableFile) as exc:
        reason = exc.reason if isinstance(exc, UnreadableFile) else str(exc)
        source, links = _input_named(deps, kind, ref, exc)
        raise_alert(
            deps.run.engine,
            key=key,
            severity="critical",
            kind="remediation_input",
            subject=f"{kind.value} {ref}: cannot remediate" + _named(source),
            message=f"{source}: {reason}" if source else reason,
            links=links,
        )
        return f"not remediated: {reason}"
    resolve_alert(deps.run.engine, key)
    return outcome


def _named(source: str | None) -> str:
    """The file in the subject, a long key cut (the message holds it whole)."""
    if not source:
        return ""
    return f" {source[:200]}…" if len(source) > 200 else f" {source}"


def _input_named(
    deps: JobDeps, kind: TaskKind, ref: str, exc: Exception
) -> tuple[str | None, dict[str, Any]]:
    """The file a task is about (an import set's bucket key, or Stripe's file id; the object
    an error report's task could not read) and the alert's links to it. The alert named only
    `impset_local_…` (which file to save as UTF-8 was in the import set's row alone), or for
    a report its event id, whichever of its objects could not be read."""
    if kind is TaskKind.ERROR_REPORT:  # `unreadable`, not `objects`: the object it cannot read
        key = exc.source if isinstance(exc, UnreadableFile) else None
        return key, {"event": ref} | ({"unreadable": [key]} if key else {})
    if kind not in IMPORT_SET_TASKS:
        return None, {}
    found = import_set(deps.run.engine, ref)
    if found is None:
        return None, {"import_set": ref}
    links: dict[str, Any] = {"import_set": ref}
    if found.source_object:
        links["objects"] = [found.source_object]
        return found.source_object, links
    if found.source_file_id:
        links["file"] = found.source_file_id
        return f"file {found.source_file_id}", links
    return None, links


def input_alert_key(kind: TaskKind, ref: str) -> str:
    return f"remediation:{kind.value}:{ref}"
