"""The look-up of the other keys holding a batch's identifiers (`CopyRuns.keys_holding`) runs
only when a run over another source exists: with none, no other key's run can have corrected
a row, and asking imported_rows about every batch of 4,096 rows cost some 12 ms a batch on
PostgreSQL with 1M imported rows (about 3 s a file of 1M rows). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from remediation.ports import ObjectInfo
from service.models import ImportedRow, RemediationRun, RunTrigger
from service.poller.other_versions import OtherVersions
from service.poller.progress import ProgressStore

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
ASKED = [f"id-{i}" for i in range(50)]


@pytest.fixture
def statements(db_engine: Engine) -> Iterator[list[str]]:
    """The statements sent to the database."""
    sent: list[str] = []

    def note(*args: Any) -> None:
        sent.append(str(args[2]))

    event.listen(db_engine, "before_cursor_execute", note)
    yield sent
    event.remove(db_engine, "before_cursor_execute", note)


def _holding_lookups(statements: list[str]) -> int:
    """How many of `statements` asked which other keys hold the identifiers."""
    return sum("imported_rows.object_key !=" in s.replace('"', "") for s in statements)


def test_the_other_keys_are_looked_up_only_once_a_run_over_another_source_exists(
    db_engine: Engine, statements: list[str]
) -> None:
    with Session(db_engine) as session:  # a copy holding the rows, unsent: no run anywhere
        for number, identifier in enumerate(ASKED[:3], start=1):
            session.add(
                ImportedRow(
                    identifier=identifier,
                    object_key="usage/day-copy.csv",
                    etag="c1",
                    row_number=number,
                    timestamp=1_764_000_000,
                )
            )
        session.commit()
    day = ObjectInfo(key="usage/day.csv", etag="d1", size=1, last_modified=NOW)
    others = OtherVersions(ProgressStore(db_engine), day, NOW)
    for _batch in range(3):
        assert others.sent(ASKED) == set()
    assert _holding_lookups(statements) == 0, statements
    with Session(db_engine) as session:
        session.add(
            RemediationRun(run_key="k", trigger=RunTrigger.POLLER, source="usage/day-copy.csv")
        )
        session.commit()
    others = OtherVersions(ProgressStore(db_engine), day, NOW)  # the next import
    assert others.sent(ASKED) == set()  # the copy's run corrected none of them
    assert _holding_lookups(statements) == 1, statements
