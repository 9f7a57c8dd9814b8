"""Remediate the rows a meter error report is about, when we imported them ourselves.

Samples were linked to (object, row) when the report was stored (the poller records
identifier -> object in `imported_rows`, in import and index mode). For each linked object
the whole object is read again and every row of the reported meter failing with a reported
code is remediated (see remediation.reported), one run per (report, object). Rows an
earlier run over the same object already handled are skipped, so no row is sent twice.
A report with no linked rows is kept as it is, with its samples, for the digest.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from remediation.poller import derived_identifier, source_tag
from remediation.records import UsageRecord
from remediation.repair import InputPlan, plan_input, read_repaired
from remediation.reported import ReportScope, bad_customers, select_reported
from remediation.validation import MeterIndex
from service.db import session_scope
from service.models import (
    CorrectionAudit,
    ErrorReport,
    ErrorSample,
    ErrorTypeCount,
    ImportedRow,
    QuarantinedRow,
)
from service.models._types import as_utc, utcnow
from service.remediation_runs import RunContext, RunRequest, execute_run, finished_run

if TYPE_CHECKING:  # only for the annotation; remediation_jobs imports this module lazily
    from service.remediation_jobs import JobDeps


def remediate_error_report(deps: JobDeps, event_id: str) -> str:
    ctx = deps.run
    report, samples, codes = _load(ctx.engine, event_id)
    objects = _linked_objects(ctx.engine, samples)
    if not objects:
        _set_status(ctx.engine, event_id, "unmatched")
        return "no rows of ours: kept with its samples for the digest"
    scope_base = ReportScope(
        codes=frozenset(codes),
        samples={s.identifier: s.code for s in samples if s.identifier},
        event_name=_event_name(ctx, report.meter_id),
    )
    now = int((as_utc(report.validation_end) or as_utc(report.created_at) or utcnow()).timestamp())
    for key, etag in sorted(objects.items()):
        _remediate_object(ctx, event_id, key, etag, scope_base, now)
    _set_status(ctx.engine, event_id, "remediated")
    return f"remediated rows of {len(objects)} object(s)"


def _remediate_object(
    ctx: RunContext, event_id: str, key: str, etag: str, base: ReportScope, now: int
) -> None:
    run_key = f"error_report:{event_id}:{key}"
    if finished_run(ctx.engine, run_key) is not None:
        return
    from service.remediation_jobs import TaskInputMissing, _next_generation

    if ctx.bucket.head(key) is None:
        raise TaskInputMissing(f"object {key} named by report {event_id} is gone from the bucket")
    scope = ReportScope(base.codes, base.samples, base.event_name, _handled_rows(ctx.engine, key))
    index = MeterIndex(ctx.meters, value_precision=ctx.rules.value_precision)
    with tempfile.TemporaryDirectory(prefix="meterfix-obj-") as tmp:
        path = Path(tmp) / Path(key).name
        ctx.bucket.download(key, path)
        plan = plan_input(path, ctx.rules)
        customers = bad_customers(_records(path, plan, ctx, key, etag), scope, index)
        request = RunRequest(
            run_key=run_key,
            trigger="error_report",
            source=key,
            tag=f"report-{event_id}",
            fmt=plan.fmt,
            now=now,
            generation=_next_generation(ctx.bucket, key),
            columns=plan.columns or None,
        )
        rows = _records(path, plan, ctx, key, etag)
        execute_run(ctx, request, select_reported(rows, scope, index, now, customers))


def _records(
    path: Path, plan: InputPlan, ctx: RunContext, key: str, etag: str
) -> Iterator[UsageRecord]:
    """The object's rows, identifiers filled in exactly as the poller filled them."""
    tag = source_tag(key, etag)
    with path.open("rb") as stream:
        for record in read_repaired(stream, plan, ctx.rules):
            if not record.identifier:
                record.identifier = derived_identifier(tag, record.row_number)
            yield record


def _load(engine: Engine, event_id: str) -> tuple[ErrorReport, list[ErrorSample], set[str]]:
    from service.remediation_jobs import TaskInputMissing

    with Session(engine) as session:
        report = session.exec(select(ErrorReport).where(ErrorReport.event_id == event_id)).first()
        if report is None:
            raise TaskInputMissing(f"error report {event_id} is not recorded")
        samples = list(
            session.exec(select(ErrorSample).where(ErrorSample.report_id == report.id)).all()
        )
        counts = session.exec(
            select(ErrorTypeCount.code).where(ErrorTypeCount.report_id == report.id)
        ).all()
    return report, samples, set(counts) | {s.code for s in samples}


def _linked_objects(engine: Engine, samples: list[ErrorSample]) -> dict[str, str]:
    """object key -> the ETag we imported it at, for every sample that is one of our rows."""
    identifiers = {s.identifier for s in samples if s.identifier}
    if not identifiers:
        return {}
    with Session(engine) as session:
        rows = session.exec(
            select(ImportedRow.object_key, ImportedRow.etag).where(
                col(ImportedRow.identifier).in_(identifiers)
            )
        ).all()
    return {key: etag for key, etag in rows}


def _handled_rows(engine: Engine, key: str) -> frozenset[int]:
    with Session(engine) as session:
        corrected = session.exec(
            select(CorrectionAudit.row_number).where(CorrectionAudit.source == key)
        ).all()
        quarantined = session.exec(
            select(QuarantinedRow.row_number).where(QuarantinedRow.source == key)
        ).all()
    return frozenset(corrected) | frozenset(quarantined)


def _event_name(ctx: RunContext, meter_id: str | None) -> str | None:
    for meter in ctx.meters:
        if meter_id and meter.id == meter_id:
            return meter.event_name
    return None


def _set_status(engine: Engine, event_id: str, status: str) -> None:
    with session_scope(engine) as session:
        report = session.exec(select(ErrorReport).where(ErrorReport.event_id == event_id)).one()
        report.status = status
        session.add(report)
