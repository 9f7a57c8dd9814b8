"""`db.bulk_load` (COPY on PostgreSQL, one executemany on SQLite) writes exactly what an ORM
insert writes: the same text, JSON (non-ASCII, nesting, nulls) and timestamps read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlmodel import Session

from service.db import bulk_load, make_engine
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun, RunTrigger
from service.models._types import table_of

WHEN = datetime(2026, 11, 30, 12, 34, 56, 789012, tzinfo=UTC)


def _quarantined(run_id: int, index: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "source": "file_x",
        "row_number": index,
        "identifier": f"q{index}",
        "code": "meter_event_invalid_value",
        "reason": 'value "1,2" is not a number\ttab',
        "meter": "api_requests",
        "customer": None,
        "record": {"note": "same in every row", "payload": {"value": "1,2", "ü": [1, None]}},
        "created_at": WHEN,
    }


def _correction(run_id: int, index: int) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "source": "file_x",
        "row_number": index,
        "identifier": f"a{index}",
        "new_identifier": f"a{index}-mfx1",
        "code": "timestamp_in_future",
        "rule": "timestamp_ms_to_s",
        "field": "timestamp",
        "before": "1764000000000",
        "after": None,
    }


def test_bulk_rows_read_back_as_orm_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            run = RemediationRun(run_key="k", trigger=RunTrigger.IMPORT_SET_SUCCEEDED)
            session.add(run)
            session.commit()
            assert run.id is not None
            run_id = run.id
        with engine.begin() as connection:  # row 0 the ORM's way, rows 1-3 in bulk
            connection.execute(insert(CorrectionAudit), [_correction(run_id, 0)])
            connection.execute(insert(QuarantinedRow), [_quarantined(run_id, 0)])
            bulk_load(
                connection, table_of(CorrectionAudit), [_correction(run_id, i) for i in (1, 2)]
            )
            bulk_load(
                connection, table_of(QuarantinedRow), [_quarantined(run_id, i) for i in (1, 2)]
            )
            bulk_load(connection, table_of(QuarantinedRow), [])  # nothing: nothing written
        with engine.connect() as connection:  # as stored, not as the ORM reads it back
            stored = connection.execute(
                text(
                    "SELECT created_at, record, reason, customer FROM quarantined_rows ORDER BY id"
                )
            ).all()
        assert len(stored) == 3 and stored[1] == stored[0] == stored[2]
        with Session(engine) as session:
            held = session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.id)).all()
            audit = session.scalars(select(CorrectionAudit).order_by(CorrectionAudit.id)).all()
        assert [row.record for row in held] == [_quarantined(run_id, i)["record"] for i in range(3)]
        assert {row.created_at.replace(tzinfo=UTC) for row in held} == {WHEN}
        assert [(a.identifier, a.new_identifier, a.before, a.after) for a in audit] == [
            (f"a{i}", f"a{i}-mfx1", "1764000000000", None) for i in range(3)
        ]
    finally:
        engine.dispose()
