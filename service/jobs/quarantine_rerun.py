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
from typing import Any

from sqlalchemy import Engine

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.filetypes import FileFormat
from remediation.identifiers import (
    Identifiers,
    Lineage,
    reserved_originals,
    row_identifier,
    trace_ancestors,
)
from remediation.jsonreaders import record_from_obj
from remediation.records import MFX_PREFIX, UsageRecord
from service.errors import BadParameter, RerunInputMissing
from service.jobs.inputs import LOOKUP_BATCH, parents
from service.jobs.runs import RunContext, RunRequest, execute_run
from service.jobs.store.quarantine import (
    QuarantineFilter,
    mark_rerun,
    quarantined_entries,
    rerun_filters,
    rows_to_rerun,
)
from service.jobs.store.runs import finished_run
from service.models import RunTrigger

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
    mark_rerun(ctx.engine, ids, run.id)
    return (
        f"re-ran {len(ids)} quarantined rows as run {run.id}: {run.valid + run.corrected} "
        f"now pass, {run.quarantined} stay quarantined"
    )


def _pick(engine: Engine, action_ref: str, run_key: str) -> tuple[list[int], int]:
    """The ids of the rows to re-run and the generation their corrected rows get."""
    with engine.connect() as connection:
        filters = rerun_filters(connection, int(action_ref)) if action_ref.isdigit() else None
        if not isinstance(filters, dict):
            raise RerunInputMissing(f"admin action {action_ref} with the re-run's filter is gone")
        try:
            found = QuarantineFilter.from_query({str(k): str(v) for k, v in filters.items()})
        except BadParameter as exc:
            raise RerunInputMissing(f"admin action {action_ref}: {exc}") from exc
        return rows_to_rerun(connection, found, run_key)


def _identified_rows(engine: Engine, ids: Sequence[int]) -> Iterator[tuple[str, Any, Any]]:
    """(identifier, code, record) of each row, by id; a row that had no identifier gets the
    one its first run gave it (from its source and row number), as its original."""
    for row in quarantined_entries(engine, ids):
        record = row.record if isinstance(row.record, dict) else {}
        identifier = _text(record.get("identifier")) or _text(row.identifier)
        yield (
            identifier or row_identifier(str(row.source or ""), int(row.row_number or 0)),
            row.code,
            record,
        )


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
    """The row as it arrived (without the `mfx_*` notes), read as the JSON readers read an
    object (a payload that is no object, an identifier or event name that is one: a malformed
    row again, its values as they came), with the code it arrived with unless our validation
    decides that code (see CHECKED_BY_VALIDATION)."""
    record = record_from_obj(
        number, {key: value for key, value in row.items() if not key.startswith(MFX_PREFIX)}
    )
    if "identifier" not in record.extra:  # not an object or list kept as it came
        record.identifier = identifier
    record.error_code = None if code in CHECKED_BY_VALIDATION else code or None
    record.error_message = None
    return record


def _text(value: object) -> str | None:
    return None if value is None else str(value)
