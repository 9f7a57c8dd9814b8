"""The look-ups of the rows the poller recorded, by identifier (`service.poller.store`): what
they find, and one statement parameter however many identifiers they are asked about.

An import-set run asks `taken_since` about every batch of its file (a chunk of 1,000 distinct
identifiers at a time): with a parameter each, rendering the statement cost PostgreSQL runs
~7 ms a chunk, and the service's remediation stage of 1M rows took 10.7 s there against 3.7 s
on SQLite (bench/service_path.py). Identifiers no row can hold (a NUL, which PostgreSQL
refuses as a parameter; past 512 characters) are not asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from remediation.poller import RowRef
from remediation.ports import ObjectInfo
from service.db import make_engine
from service.models import BucketObject, ImportedRow, PollerBatch
from service.poller.progress import ProgressStore
from service.poller.store import (
    event_names_of,
    first_versions,
    imported_rows_by_identifier,
    objects_holding,
    row_numbers,
    sent_by_version,
    sent_moments,
    taken_since,
)
from service.poller.versions import PollerStore

UPLOADED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SENT = UPLOADED + timedelta(minutes=5)
KEY = "usage/day.csv"
# asked: 3,000 identifiers, 4 of them recorded, and two no row can hold
ASKED = {f"id-{i}" for i in range(3000)} | {"nul\x00inside", "L" * 600}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    with Session(engine) as session:
        obj = BucketObject(key=KEY, etag="e1", last_modified=UPLOADED, first_sent_at=SENT)
        session.add(obj)
        session.flush()
        assert obj.id is not None
        batch = PollerBatch(
            object_id=obj.id, batch_number=0, first_row=1, rows=2, first_sent_at=SENT
        )
        session.add(batch)
        for number, identifier in enumerate(["id-7", "id-9", "id-2999", "other"], start=1):
            session.add(
                ImportedRow(
                    identifier=identifier,
                    object_key=KEY,
                    etag="e1",
                    row_number=number,
                    event_name="api_requests" if number < 4 else "tokens",
                    sent=number <= 2,
                    content=number,
                )
            )
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def parameters(engine: Engine) -> Iterator[list[int]]:
    """How many parameters each statement sent to the database had."""
    counted: list[int] = []

    def count(*args: Any) -> None:
        sent = args[3]
        counted.append(len(sent) if sent is not None else 0)

    event.listen(engine, "before_cursor_execute", count)
    yield counted
    event.remove(engine, "before_cursor_execute", count)


def test_lookups_by_identifier_find_the_recorded_rows_in_one_parameter(
    engine: Engine, parameters: list[int]
) -> None:
    assert taken_since(engine, ASKED, UPLOADED - timedelta(hours=1)) == {"id-7", "id-9", "id-2999"}
    assert taken_since(engine, ASKED, UPLOADED) == set()  # uploaded before `since`: not taken
    firsts = first_versions(engine, ASKED)
    assert {k: (v.key, v.etag, v.sent, v.content) for k, v in firsts.items()} == {
        "id-7": (KEY, "e1", True, 1),
        "id-9": (KEY, "e1", True, 2),
        "id-2999": (KEY, "e1", False, 3),
    }
    assert sent_moments(engine, ASKED) == {"id-7": SENT, "id-9": SENT}
    assert objects_holding(engine, ASKED) == {KEY: "e1"}
    assert event_names_of(engine, ASKED) == {"api_requests"}
    assert row_numbers(engine, KEY, ASKED) == {"id-7": 1, "id-9": 2, "id-2999": 3}
    assert row_numbers(engine, "usage/other.csv", ASKED) == {}
    with Session(engine) as session:
        found = imported_rows_by_identifier(session, ASKED)
    assert {k: row.row_number for k, row in found.items()} == {"id-7": 1, "id-9": 2, "id-2999": 3}
    assert len(parameters) >= 9
    assert max(parameters) <= 3, parameters  # the identifiers are one parameter


def test_a_send_again_from_a_later_version_of_the_object_is_the_rows_latest(
    engine: Engine,
) -> None:
    """`id-7`, sent from `e1`, is sent again from `e2` (the day's file rewritten in place, the
    row fixed by hand after Stripe refused it) two days later: the row stays recorded with
    `e1` (the version another must not send it again after), and the send from `e2` is
    recorded too (`sent_by_version`, `sent_moments`: an error report's run judged the row by
    `e1`'s send), with what it sent (`FirstVersion.latest`). Recorded as not sent by `e2`
    (`mark_not_sent`), only `e1`'s counts again."""
    later = SENT + timedelta(days=2)
    with Session(engine) as session:
        obj = BucketObject(key=KEY, etag="e2", last_modified=later, first_sent_at=later)
        session.add(obj)
        session.flush()
        assert obj.id is not None
        session.add(
            PollerBatch(object_id=obj.id, batch_number=0, first_row=5, rows=1, first_sent_at=later)
        )
        session.commit()
    store, e2 = PollerStore(engine), ObjectInfo(key=KEY, etag="e2", size=1, last_modified=later)
    store.insert_rows(e2, [RowRef("id-7", 5, "api_requests", None, sent=True, content=7)])
    assert sent_by_version(engine, KEY, "e2", ASKED) == {"id-7": 5}
    assert sent_by_version(engine, KEY, "e1", ASKED) == {"id-7": 1, "id-9": 2}
    assert sent_moments(engine, ASKED) == {"id-7": later, "id-9": SENT}
    # what `e2` sent is the row's latest send (a version after it holding that, left out)
    assert first_versions(engine, {"id-7"})["id-7"] == (KEY, "e1", True, 1, 7)
    store.mark_not_sent(e2, ["id-7"])
    assert sent_by_version(engine, KEY, "e2", ASKED) == {}
    assert sent_moments(engine, ASKED) == {"id-7": SENT, "id-9": SENT}
    assert first_versions(engine, {"id-7"})["id-7"] == (KEY, "e1", True, 1, 1)


def test_a_send_again_from_a_later_version_of_the_object_is_its_own_on_its_next_pass(
    engine: Engine,
) -> None:
    """`id-7`, sent from `e1`, is sent again from row 5 of `e2` in a batch never acknowledged:
    `e2`'s next pass reads it as a row it sent (`sent_rows_before`, `sent_here`), so failing
    our checks then it is marked not sent (`BatchRows.failed_rows`) and its send again
    forgotten. Read by `e2`'s etag alone, it was not: the send stayed recorded and remediation
    held the row as `identifier_taken`, "also row 5", the row itself."""
    later = SENT + timedelta(days=2)
    with Session(engine) as session:
        obj = BucketObject(key=KEY, etag="e2", last_modified=later, first_sent_at=later)
        session.add(obj)
        session.flush()
        assert obj.id is not None
        session.add(
            PollerBatch(object_id=obj.id, batch_number=0, first_row=5, rows=1, first_sent_at=later)
        )
        session.commit()
    store, progress = PollerStore(engine), ProgressStore(engine)
    e1 = ObjectInfo(key=KEY, etag="e1", size=1, last_modified=UPLOADED)
    e2 = ObjectInfo(key=KEY, etag="e2", size=1, last_modified=later)
    store.insert_rows(e2, [RowRef("id-7", 5, "api_requests", None, sent=True, content=7)])
    assert _bits(progress.sent_rows_before(e2, 10)) == [5]
    assert progress.sent_here(e2, sorted(ASKED)) == {"id-7"}
    assert _bits(progress.sent_rows_before(e1, 10)) == [1, 2]  # the first send's, as it was
    assert progress.sent_here(e1, sorted(ASKED)) == {"id-7", "id-9"}
    store.mark_not_sent(e2, ["id-7"])
    assert _bits(progress.sent_rows_before(e2, 10)) == []
    assert progress.sent_here(e2, sorted(ASKED)) == set()
    assert sent_by_version(engine, KEY, "e2", ASKED) == {}
    assert _bits(progress.sent_rows_before(e1, 10)) == [1, 2]


def _bits(bitmap: bytearray) -> list[int]:
    """The row numbers a `ProgressStore.sent_rows_before` bitmap holds."""
    return [n for n in range(len(bitmap) * 8) if bitmap[n >> 3] & (1 << (n & 7))]
