"""The quarantine re-run task: rows an operator picked (by the filter kept on the admin
action) run again through the current rules as one new run. Rows that now pass go to its
corrected object, the rest to its own quarantine rows; the rows taken get `rerun_id`.

Quarantined rows were never sent, so re-running them is always safe. Each row keeps the code
it arrived with, so a correction is still what Stripe's error asks for. The rows are picked
once (ids, oldest first) before the run starts, so a retried task after a crash takes the
same rows and never its own new ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

from sqlalchemy import Engine, Table, func, select, update

from remediation.filetypes import FileFormat
from remediation.records import MFX_PREFIX, UsageRecord
from service.models.alerts import AdminAction
from service.models.remediation import QuarantinedRow, RemediationRun
from service.remediation_runs import RunContext, RunRequest, execute_run, finished_run
from service.web.params import BadParameter, quarantine_filter
from service.web.quarantine import conditions

QUARANTINE: Table = QuarantinedRow.__table__  # type: ignore[attr-defined]
RUNS: Table = RemediationRun.__table__  # type: ignore[attr-defined]
ACTIONS: Table = AdminAction.__table__  # type: ignore[attr-defined]
BATCH = 500
CORE_KEYS = ("identifier", "timestamp", "event_name", "payload")


class RerunInputMissing(Exception):
    """The admin action naming the rows is gone or unreadable (not retried)."""


def rerun_quarantine(ctx: RunContext, action_ref: str) -> str:
    run_key = f"quarantine_rerun:{action_ref}"
    if finished_run(ctx.engine, run_key) is not None:
        return f"already re-run ({run_key})"
    ids, generation = _pick(ctx.engine, action_ref, run_key)
    if not ids:
        return "no quarantined rows match: nothing to re-run"
    request = RunRequest(
        run_key=run_key,
        trigger="quarantine_rerun",
        source=f"quarantine re-run {action_ref}",
        tag=f"rerun-{action_ref}",
        fmt=FileFormat.JSONL,
        now=int(time.time()),
        generation=generation,
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


def _records(engine: Engine, ids: Sequence[int]) -> Iterator[UsageRecord]:
    number = 0
    chunks = iter(ids)
    while chunk := list(islice(chunks, BATCH)):
        with engine.connect() as connection:
            rows = connection.execute(
                select(QUARANTINE.c.code, QUARANTINE.c.identifier, QUARANTINE.c.record)
                .where(QUARANTINE.c.id.in_(chunk))
                .order_by(QUARANTINE.c.id)
            ).all()
        for row in rows:
            number += 1
            record = row[2] if isinstance(row[2], dict) else {}
            yield _usage_record(number, _text(row[0]) or "", _text(row[1]), record)


def _usage_record(
    number: int, code: str, identifier: str | None, row: dict[str, Any]
) -> UsageRecord:
    payload = row.get("payload")
    return UsageRecord(
        row_number=number,
        identifier=_text(row.get("identifier")) or _text(identifier),
        timestamp=row.get("timestamp"),
        event_name=_text(row.get("event_name")),
        payload=dict(payload) if isinstance(payload, dict) else {},
        extra={
            key: value
            for key, value in row.items()
            if key not in CORE_KEYS and not key.startswith(MFX_PREFIX)
        },
        error_code=code or None,
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
