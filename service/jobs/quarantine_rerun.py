"""The quarantine re-run task: rows an operator picked (by the filter kept on the admin
action) run again through the current rules as one new run. Rows that now pass go to its
corrected object, the rest to its own quarantine rows; the rows taken get `rerun_id`.

Quarantined rows were never sent, so re-running them is always safe (the run is `rejected`:
a row that passes goes out). The rows are picked
once (ids, oldest first) before the run starts, so a retried task after a crash takes the
same rows and never its own new ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy import Engine, func, select, update

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.filetypes import FileFormat
from remediation.identifiers import (
    Identifiers,
    Lineage,
    reserved_originals,
    row_identifier,
    trace_ancestors,
)
from remediation.records import MFX_PREFIX, UsageRecord
from service.errors import BadParameter, RerunInputMissing
from service.jobs.inputs import LOOKUP_BATCH, parents
from service.jobs.runs import RunContext, RunRequest, execute_run, finished_run
from service.models import RunTrigger
from service.models._types import table_of
from service.models.alerts import AdminAction
from service.models.remediation import QuarantinedRow, RemediationRun
from service.web.params import quarantine_filter
from service.web.quarantine import conditions

QUARANTINE = table_of(QuarantinedRow)
RUNS = table_of(RemediationRun)
ACTIONS = table_of(AdminAction)
BATCH = 500
CORE_KEYS = ("identifier", "timestamp", "event_name", "payload")
# Codes our own validation decides (from the row and the meters): such a row goes through
# validation again, so a row that now passes (its meter exists now, its time is no longer in
# the future) goes out. Other codes (a customer Stripe did not find, unknown codes) only
# Stripe can judge: the row keeps its code, and only a correction sends it out.
CHECKED_BY_VALIDATION = KNOWN_CODES - {ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.UNCLASSIFIED}


def rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    run_key = f"quarantine_rerun:{action_ref}"
    if finished_run(ctx.engine, run_key) is not None:
        return f"already re-run ({run_key})"
    ids, generation = _pick(ctx.engine, action_ref, run_key)
    if not ids:
        return "no quarantined rows match: nothing to re-run"
    source = f"quarantine re-run {action_ref}"
    request = RunRequest(
        run_key=run_key,
        trigger=RunTrigger.QUARANTINE_RERUN,
        source=source,
        tag=f"rerun-{action_ref}",
        fmt=FileFormat.JSONL,
        now=int(time.time()),
        generation=generation,
        lineage=_lineage(ctx.engine, ids, generation, source),
        rejected=True,  # quarantined rows were never sent: every row may go out corrected
    )
    run = execute_run(ctx, request, _records(ctx.engine, ids))
    assert run.id is not None
    _mark(ctx.engine, ids, run.id)
    return (
        f"re-ran {len(ids)} quarantined rows as run {run.id}: {run.valid + run.corrected} "
        f"now pass, {run.quarantined} stay quarantined"
    )


def _pick(engine: Engine, action_ref: str, run_key: str) -> tuple[list[int], int]:
    """The ids of the rows to re-run and the generation their corrected rows get."""
    with engine.connect() as connection:
        detail = None
        if action_ref.isdigit():
            detail = connection.execute(
                select(ACTIONS.c.detail).where(ACTIONS.c.id == int(action_ref))
            ).scalar()
        filters = detail.get("filters") if isinstance(detail, dict) else None
        if not isinstance(filters, dict):
            raise RerunInputMissing(f"admin action {action_ref} with the re-run's filter is gone")
        try:
            found = quarantine_filter({str(k): str(v) for k, v in filters.items()})
        except BadParameter as exc:
            raise RerunInputMissing(f"admin action {action_ref}: {exc}") from exc
        own = select(RUNS.c.id).where(RUNS.c.run_key == run_key).scalar_subquery()
        where = [*conditions(found), QUARANTINE.c.rerun_id.is_(None)]
        ids = [
            int(row[0])
            for row in connection.execute(
                select(QUARANTINE.c.id)
                .where(*where, QUARANTINE.c.run_id != func.coalesce(own, -1))
                .order_by(QUARANTINE.c.id)
            )
        ]
        generation = connection.execute(
            select(func.max(RUNS.c.generation))
            .select_from(QUARANTINE.join(RUNS, RUNS.c.id == QUARANTINE.c.run_id))
            .where(*where)
        ).scalar()
    return ids, int(generation or 1)


def _identified_rows(engine: Engine, ids: Sequence[int]) -> Iterator[tuple[str, Any, Any]]:
    """(identifier, code, record) of each row, by id; a row that had no identifier gets the
    one its first run gave it (from its source and row number), as its original."""
    chunks = iter(ids)
    while chunk := list(islice(chunks, BATCH)):
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    QUARANTINE.c.identifier,
                    QUARANTINE.c.source,
                    QUARANTINE.c.row_number,
                    QUARANTINE.c.code,
                    QUARANTINE.c.record,
                )
                .where(QUARANTINE.c.id.in_(chunk))
                .order_by(QUARANTINE.c.id)
            ).all()
        for row in rows:
            record = row[4] if isinstance(row[4], dict) else {}
            identifier = _text(record.get("identifier")) or _text(row[0])
            yield identifier or row_identifier(str(row[1] or ""), int(row[2] or 0)), row[3], record


def _lineage(engine: Engine, ids: Sequence[int], generation: int, source: str) -> Lineage:
    """Which of the rows' identifiers we wrote (a quarantined row of a corrected file) and
    the originals a derived identifier must not equal, as the other jobs find them."""
    identifiers = [identifier for identifier, _, _ in _identified_rows(engine, ids)]
    ancestors = trace_ancestors(
        identifiers, generation - 1, lambda batch: parents(engine, batch), LOOKUP_BATCH
    )
    lineage = Lineage(ancestors)
    numbered = ((identifier, n) for n, identifier in enumerate(identifiers, start=1))
    reserved = reserved_originals(numbered, Identifiers(source, generation, lineage, keep=False))
    return Lineage(ancestors, reserved)


def _records(engine: Engine, ids: Sequence[int]) -> Iterator[UsageRecord]:
    for number, (identifier, code, record) in enumerate(_identified_rows(engine, ids), start=1):
        yield _usage_record(number, _text(code) or "", identifier, record)


def _usage_record(number: int, code: str, identifier: str, row: dict[str, Any]) -> UsageRecord:
    """The row as it arrived (without the `mfx_*` notes), with the code it arrived with
    unless our validation decides that code (see CHECKED_BY_VALIDATION)."""
    payload = row.get("payload")
    return UsageRecord(
        row_number=number,
        identifier=identifier,
        timestamp=row.get("timestamp"),
        event_name=_text(row.get("event_name")),
        payload=dict(payload) if isinstance(payload, dict) else {},
        extra={
            key: value
            for key, value in row.items()
            if key not in CORE_KEYS and not key.startswith(MFX_PREFIX)
        },
        error_code=None if code in CHECKED_BY_VALIDATION else code or None,
    )


def _mark(engine: Engine, ids: Sequence[int], run_id: int) -> None:
    chunks = iter(ids)
    with engine.begin() as connection:
        while chunk := list(islice(chunks, BATCH)):
            connection.execute(
                update(QUARANTINE).where(QUARANTINE.c.id.in_(chunk)).values(rerun_id=run_id)
            )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
