"""`db.bulk_load` (COPY on PostgreSQL, many rows a statement on SQLite) writes exactly what an
ORM insert writes: the same text, JSON (non-ASCII, nesting, nulls) and timestamps read back."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import insert, select, text
from sqlmodel import Session

from remediation.lineage import Parent
from remediation.outcomes import Correction, corrections_batch
from remediation.outcomes import QuarantinedRow as Held
from service.db import bulk as db
from service.db import make_engine
from service.db.bulk import bulk_load
from service.jobs.input_lineage import parents
from service.jobs.store import lineage, loads, sorted_stage
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun, RunTrigger
from service.models._types import table_of

WHEN = datetime(2026, 11, 30, 12, 34, 56, 789012, tzinfo=UTC)


COLUMNS = loads.QUARANTINE_COLUMNS


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


def _stored_quarantined(engine: Any, columns: str) -> list[Any]:
    """`columns` of every quarantined row, as stored (the record's text: CAST), by id."""
    with engine.connect() as connection:
        query = text(f"SELECT {columns} FROM quarantined_rows ORDER BY id")
        return list(connection.execute(query).all())


def _insert_quarantined(engine: Any, run_id: int, rows: list[tuple[Any, ...]]) -> None:
    with loads.QuarantineStage(engine, run_id, "file_x") as stage:
        stage.add(rows)
        stage.load()


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


@pytest.mark.parametrize("per", [4, 4000])
def test_bulk_rows_in_statements_of_many_rows_keep_every_value_in_order(
    db_url: str, monkeypatch: pytest.MonkeyPatch, per: int
) -> None:
    """SQLite binds `ROWS_PER_INSERT` rows a statement and the rest one a statement: every row
    lands once, in order, its nulls as nulls, whether the rows fill whole statements or not;
    a setting past the connection's parameter limit is held to it."""
    monkeypatch.setattr(db, "ROWS_PER_INSERT", per)
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        rows = [
            {
                **_correction(run_id, i),
                "identifier": None if i % 5 == 0 else f"é{i}",
                "after": str(i) if i % 3 else None,
            }
            for i in range(4003)
        ]
        with engine.begin() as connection:
            driver: Any = connection.connection.driver_connection
            if engine.dialect.name == "sqlite":  # 10 rows of 10 columns a statement at most
                driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
            bulk_load(connection, table_of(CorrectionAudit), rows)
        stored = _stored_audit(engine)
        assert [(r[1], r[2], r[3], r[8]) for r in stored] == [
            (row["row_number"], row["identifier"], row["new_identifier"], row["after"])
            for row in rows
        ]
        assert {r[0] for r in stored} == {run_id} and {r[7] for r in stored} == {"1764000000000"}
    finally:
        engine.dispose()


def test_quarantined_rows_as_tuples_read_back_as_orm_rows(db_url: str) -> None:
    """`QuarantineStage` takes tuples of `QUARANTINE_COLUMNS`, a batch sharing one
    timestamp object, each record as JSON text (the engine writes it): every row reads back
    as an ORM insert of the same values, rows with their own timestamp and record keep
    theirs, and a record's text is stored as it came (compact, not ASCII-escaped)."""
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        later = datetime(2026, 12, 1, 1, 2, 3, 4, tzinfo=UTC)
        dicts = [_quarantined(run_id, i) for i in range(5)]
        dicts[3] |= {"created_at": later, "record": {"other": True}, "customer": "cus_1"}
        with engine.begin() as connection:  # row 0 the ORM's way
            connection.execute(insert(QuarantinedRow), [dicts[0]])
        texts = [json.dumps(row["record"]) for row in dicts]  # as the ORM encodes it
        texts[4] = json.dumps(dicts[4]["record"], ensure_ascii=False, separators=(",", ":"))
        _insert_quarantined(
            engine,
            run_id,
            [
                tuple(texts[i] if name == "record" else dicts[i][name] for name in COLUMNS)
                for i in range(1, 5)
            ],
        )
        stored = _stored_quarantined(
            engine, "created_at, CAST(record AS TEXT), reason, customer, row_number, identifier"
        )
        assert [row[4:] for row in stored] == [(i, f"q{i}") for i in range(5)]
        assert stored[1][:4] == stored[0][:4] == stored[2][:4]
        assert stored[3][2] == stored[0][2] and stored[3][:4] != stored[0][:4]
        assert [row[1] for row in stored] == texts
        assert '"ü":[1,null]' in texts[4]
        with Session(engine) as session:
            held = session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.id)).all()
        assert [row.record for row in held] == [row["record"] for row in dicts]
        assert [row.created_at.replace(tzinfo=UTC) for row in held] == [WHEN] * 3 + [later, WHEN]
        assert [row.customer for row in held] == [None, None, None, "cus_1", None]
    finally:
        engine.dispose()


def test_quarantined_rows_of_a_run_that_does_not_exist_are_refused(db_url: str) -> None:
    """The check that replaced the foreign key (once per load transaction, not once per row);
    a row of another source than the run's is refused as it is staged (the load writes the
    run's id and source into every row), and nothing of that batch is staged."""
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        missing = run_id + 1000

        def row(source: str) -> tuple[Any, ...]:
            found = _quarantined(run_id, 1) | {"record": "{}", "source": source}
            return tuple(found[name] for name in COLUMNS)

        with pytest.raises(LookupError, match=f"run {missing} does not exist: quarantined rows"):
            _insert_quarantined(engine, missing, [row("file_x")])
        with loads.QuarantineStage(engine, run_id, "file_x") as stage:
            with pytest.raises(
                ValueError, match="quarantined rows of source 'file_x' only, not of \\['file_y'\\]"
            ):
                stage.add([row("file_x"), row("file_y")])
            assert stage.load() == 0
        _insert_quarantined(engine, run_id, [row("file_x")])
        with engine.connect() as connection:
            held = connection.execute(text("SELECT run_id, source FROM quarantined_rows")).all()
        assert [tuple(r) for r in held] == [(run_id, "file_x")]
    finally:
        engine.dispose()


def test_a_value_repeated_from_the_row_before_is_encoded_once() -> None:
    """`db._encoded` encodes each column's value once for a run of rows holding that very
    object (a batch's timestamp), again for an equal but other object, never a null."""
    calls: list[object] = []

    def encode(value: object) -> str:
        calls.append(value)
        return f"<{value}>"

    stamp, other = ["t"], ["t"]
    rows = [(1, stamp, None), (2, stamp, "x"), (3, other, "x"), (4, None, "x"), (5, other, "y")]
    encoded = db._encoded(rows, [(1, encode), (2, encode)])
    assert encoded == [
        (1, "<['t']>", None),
        (2, "<['t']>", "<x>"),
        (3, "<['t']>", "<x>"),
        (4, None, "<x>"),
        (5, "<['t']>", "<y>"),
    ]
    assert calls == [stamp, "x", other, "y"]  # a null between two of `other`: still one
    assert calls[0] is stamp and calls[2] is other


def test_sqlite_bulk_loads_run_with_a_roomier_page_cache_and_give_it_back(sqlite_url: str) -> None:
    """A bulk load raises SQLite's page cache to `BULK_CACHE_KIB` for its statements and puts
    the connection's own setting back after them, even when a statement fails; an operator's
    larger cache is left as it is."""
    engine = make_engine(sqlite_url)
    try:
        run_id = _run(engine, "k")
        rows = [_correction(run_id, i) for i in range(300)]
        for own in (-2000, 500, -(db.BULK_CACHE_KIB * 2)):
            with engine.begin() as connection:
                driver: Any = connection.connection.driver_connection
                driver.execute(f"PRAGMA cache_size={own}")
                seen: list[str] = []
                driver.set_trace_callback(seen.append)
                bulk_load(connection, table_of(CorrectionAudit), rows)
                driver.set_trace_callback(None)
                assert driver.execute("PRAGMA cache_size").fetchone()[0] == own
                raised = [line for line in seen if line.startswith("PRAGMA cache_size=")]
                inserts = [i for i, line in enumerate(seen) if line.startswith("INSERT")]
                if own == -(db.BULK_CACHE_KIB * 2):
                    assert raised == []
                else:
                    assert raised == [
                        f"PRAGMA cache_size={-db.BULK_CACHE_KIB}",
                        f"PRAGMA cache_size={own}",
                    ]
                    first, last = (seen.index(line) for line in raised)
                    assert inserts and first < min(inserts) and max(inserts) < last
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            driver.execute("PRAGMA cache_size=-2000")
            broken = [_correction(run_id, 1) | {"code": None}]  # NOT NULL: the insert fails
            with pytest.raises(sqlite3.IntegrityError):
                bulk_load(connection, table_of(CorrectionAudit), broken)
            assert driver.execute("PRAGMA cache_size").fetchone()[0] == -2000
    finally:
        engine.dispose()


def _run(engine: Any, key: str) -> int:
    with Session(engine) as session:
        run = RemediationRun(run_key=key, trigger=RunTrigger.IMPORT_SET_SUCCEEDED)
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def _audit_sources(engine: Any) -> set[tuple[Any, ...]]:
    """(run id, source) of every correction stored."""
    with engine.connect() as connection:
        query = text("SELECT run_id, source FROM correction_audit")
        return {tuple(row) for row in connection.execute(query)}


def _stored_audit(engine: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT run_id, row_number, identifier, new_identifier, code, rule, field,"
                    " before, after FROM correction_audit ORDER BY id"
                )
            )
        ]


def test_audit_stage_loads_every_row_sorted_by_identifier(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Corrections handed over in file order land in correction_audit sorted by identifier,
    a row's corrections in the order they were made, every value as given; across several
    load transactions (SQLite) and several staged batches."""
    monkeypatch.setattr(sorted_stage, "LOAD_CHUNK", 3)
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        names = ["m7", "b2", None, "z1", "b2", "a9", "c3", "m7", "é5"]  # b2, m7 twice
        rows = [
            Correction(
                "file_x",
                n,
                name,
                None if name is None else f"{name}-mfx1",
                "timestamp_in_future",
                f"rule{n}",
                "timestamp",
                f"{n}000",
                str(n),
            )
            for n, name in enumerate(names, start=1)
        ]
        stage = loads.AuditStage(engine, run_id, "file_x")
        try:
            stage.add(rows[:4])
            stage.add([])
            stage.add(rows[4:])
            assert _stored_audit(engine) == []  # nothing in the table before the load
            assert stage.load() == len(rows)
        finally:
            stage.close()
        stored = _stored_audit(engine)
        # SQLite sorts NULL first, PostgreSQL last: compared without it
        expected = sorted(
            (row for row in rows if row.identifier is not None), key=lambda row: str(row.identifier)
        )
        assert [row for row in stored if row[2] is not None] == [
            (run_id, *row[1:]) for row in expected
        ]
        assert [row[1] for row in stored if row[2] == "b2"] == [2, 5]  # arrival order kept
        assert [row[1] for row in stored if row[2] is None] == [3]
        # The staging tables went with the stage: a second run on the same pool stages anew.
        again = _run(engine, "k2")
        with loads.AuditStage(engine, again, "file_y") as second:
            second.add([Correction("file_y", 1, "q", "q-mfx1", "c", "r", "f", None, "1")])
            assert second.load() == 1
        assert _stored_audit(engine)[-1] == (again, 1, "q", "q-mfx1", "c", "r", "f", None, "1")
        assert _audit_sources(engine) == {(run_id, "file_x"), (again, "file_y")}
    finally:
        engine.dispose()


def test_audit_stage_holds_a_nul_as_a_replacement_character(db_url: str) -> None:
    """PostgreSQL's text holds no NUL (the run's load failed, retried until dead); SQLite
    held it, and cut the text at it when a long value was in the same load. Both hold it as
    U+FFFD, in a batch handed over as columns or as tuples."""
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        rows = [
            Correction("f", 1, "a\x00", "a\x00-mfx1", "odd\x00code", "r", "f", "x\x00", "1"),
            Correction("f", 2, "b", "b-mfx1", "c" * 300, "r", "f", None, "2"),  # cut: 255
        ]
        with loads.AuditStage(engine, run_id, "f") as stage:
            stage.add(rows)
            stage.add(corrections_batch([rows[0]._replace(row=3)]))
            stage.load()
        stored = {(row[1], row[2], row[3], row[4], row[7]) for row in _stored_audit(engine)}
        held = ("a\ufffd", "a\ufffd-mfx1", "odd\ufffdcode", "x\ufffd")
        assert stored == {(1, *held), (3, *held), (2, "b", "b-mfx1", "c" * 255, None)}
    finally:
        engine.dispose()


def test_audit_stage_refuses_rows_of_a_run_that_does_not_exist(db_url: str) -> None:
    """The check that replaced the foreign key (once per load, not once per row); a
    correction of another source than the run's is refused as it is staged (the load writes
    the run's source into every row), and nothing of that batch is staged."""
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        missing = run_id + 1000
        with loads.AuditStage(engine, missing, "file_x") as stage:
            stage.add([Correction("file_x", 1, "a", "a-mfx1", "c", "r", "f", "1", "2")])
            with pytest.raises(LookupError, match=f"run {missing} does not exist"):
                stage.load()
        assert _stored_audit(engine) == []
        with loads.AuditStage(engine, run_id, "file_x") as stage:
            kept = Correction("file_x", 1, "a", "a-mfx1", "c", "r", "f", "1", "2")
            other = Correction("file_y", 2, "b", "b-mfx1", "c", "r", "f", "1", "2")
            with pytest.raises(ValueError, match="audit of source 'file_x' only"):
                stage.add([kept, other])
            assert stage.load() == 0
            stage.add([kept])
            assert stage.load() == 1
        assert _stored_audit(engine) == [(run_id, 1, "a", "a-mfx1", "c", "r", "f", "1", "2")]
        assert _audit_sources(engine) == {(run_id, "file_x")}
    finally:
        engine.dispose()


def test_audit_stage_keeps_arrival_order_within_an_identifier(db_url: str) -> None:
    """Many corrections under one identifier (staged over several batches and many pages)
    are loaded in the order they were handed over."""
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        rows = [
            Correction("f", n, "same" if n % 2 else f"i{n % 7}", "x", "c", "r", "f", "a" * 90, None)
            for n in range(6000)
        ]
        with loads.AuditStage(engine, run_id, "f") as stage:
            for start in range(0, len(rows), 1000):
                stage.add(rows[start : start + 1000])
            stage.load()
        stored = _stored_audit(engine)
        same = [row[1] for row in stored if row[2] == "same"]
        assert same == [n for n in range(6000) if n % 2]
        assert [row[2] for row in stored] == sorted(row.identifier for row in rows)
    finally:
        engine.dispose()


def test_corrections_writing_finds_identifiers_of_any_spelling(db_url: str) -> None:
    """The look-up list travels as one JSON text: identifiers holding JSON's and PostgreSQL
    array syntax's special characters, non-ASCII and "null" are found exactly, and only they
    (a prefix, a case change, a trailing space find nothing). An identifier no correction
    could have written (a lone surrogate, which a JSON input may spell and no database
    stores; NUL; wider than the column) is not asked for: it failed the run's lineage on
    PostgreSQL."""
    tricky = [
        'q"uote',
        "back\\slash",
        "com,ma",
        "{brace}",
        "null",
        "NULL",
        "ü-mfx1",
        "a b",
        "é" * 90,
    ]
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        with loads.AuditStage(engine, run_id, "f") as stage:
            stage.add(
                [
                    Correction("f", n, f"old{n}", new, "c", "r", "f", None, "1")
                    for n, new in enumerate(tricky, start=1)
                ]
            )
            stage.load()
        decoys = ['q"uot', "Null", "a b ", "ü-MFX1", "back\\\\slash", "[]", ""]
        found = lineage.corrections_writing(engine, [*decoys, *tricky])
        assert sorted((audit.new_identifier, audit.identifier, g) for audit, g in found) == sorted(
            (new, f"old{n}", 1) for n, new in enumerate(tricky, start=1)
        )
        assert lineage.corrections_writing(engine, decoys) == []
        unwritable = ["a\ud800b", "\udc80", "x\x00", "w" * 513]
        traced = parents(engine, [*unwritable, *decoys, *tricky])
        assert traced == {new: Parent(f"old{n}", "c", 1) for n, new in enumerate(tricky, start=1)}
        assert parents(engine, unwritable) == {}
        # ASCII only, one at a time (the look-up tests a plain list at once)
        for one in ("x\x00", "w" * 513):
            assert parents(engine, [one, *tricky[:3]]) == parents(engine, tricky[:3])
    finally:
        engine.dispose()


def test_quarantine_stage_loads_every_row_sorted_by_identifier(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarantined rows handed over in file order, over several staged batches, land in
    quarantined_rows sorted by identifier (their ids in that order), rows under one
    identifier in arrival order, every value as given (the record's text as it came); across
    several load transactions (SQLite). Nothing is in the table before the load."""
    monkeypatch.setattr(sorted_stage, "LOAD_CHUNK", 3)
    engine = make_engine(db_url)
    try:
        run_id = _run(engine, "k")
        names = ["m7", "b2", None, "z1", "b2", "a9", "c3", "m7", "é5"]
        rows = [
            tuple(
                (_quarantined(run_id, n) | {"identifier": name, "record": f'{{"n":{n},"é":"ü"}}'})[
                    column
                ]
                for column in COLUMNS
            )
            for n, name in enumerate(names, start=1)
        ]
        with loads.QuarantineStage(engine, run_id, "file_x") as stage:
            stage.add(rows[:4])
            stage.add([])
            stage.add(rows[4:])
            with engine.connect() as connection:
                assert connection.execute(text("SELECT * FROM quarantined_rows")).all() == []
            assert stage.load() == len(rows)
        stored = _stored_quarantined(
            engine, "identifier, row_number, CAST(record AS TEXT), run_id, reason"
        )
        named = [row[:2] for row in stored if row[0] is not None]  # NULL: first or last
        assert named == sorted((name, n) for n, name in enumerate(names, start=1) if name)
        assert [row[1] for row in stored if row[0] is None] == [3]
        assert {row[2] for row in stored} == {f'{{"n":{n},"é":"ü"}}' for n in range(1, 10)}
        assert {row[3:] for row in stored} == {(run_id, 'value "1,2" is not a number\ttab')}
        with Session(engine) as session:
            held = session.scalars(select(QuarantinedRow).order_by(QuarantinedRow.id)).all()
        assert [row.record for row in held if row.identifier == "b2"] == [
            {"n": 2, "é": "ü"},
            {"n": 5, "é": "ü"},
        ]
        assert {row.created_at.replace(tzinfo=UTC) for row in held} == {WHEN}
    finally:
        engine.dispose()


def test_a_runs_audit_and_quarantined_rows_both_load_or_fail(db_url: str) -> None:
    """The service's writer stages a run's corrections and quarantined rows (each stage on a
    connection of its own) and loads both: both land, each load timed; for a run that is
    gone, the loads refuse their rows and the failure reaches the caller, nothing stored."""
    from service.jobs.run_audit import AuditWriter
    from service.jobs.stages import Stages

    engine = make_engine(db_url)
    try:
        kept = _run(engine, "k")
        for run_id in (kept, kept + 1000):
            correction = ("file_x", 1, f"a{run_id}", f"a{run_id}-mfx1", "c", "r", "f", "1", "2")
            held = Held("file_x", 2, f"q{run_id}", "c", "m", "why", '{"n":1}', "api", None)
            with AuditWriter(engine, run_id, "file_x", Stages()) as writer:
                writer.add([correction], [held])
                if run_id != kept:
                    with pytest.raises(LookupError, match=f"run {run_id} does not exist"):
                        writer.finish()
                    continue
                assert writer.finish() > 0
                parts = writer.parts()
                assert parts["audit_load"] > 0 and parts["quarantine_load"] > 0
        with Session(engine) as session:
            audit = session.scalars(select(CorrectionAudit)).all()
            quarantined = session.scalars(select(QuarantinedRow)).all()
        stored = [(row.run_id, row.identifier, row.after) for row in audit]
        assert stored == [(kept, f"a{kept}", "2")]
        assert [(row.run_id, row.identifier, row.record) for row in quarantined] == [
            (kept, f"q{kept}", {"n": 1})
        ]
    finally:
        engine.dispose()


def test_rows_encoded_by_arrow_for_binary_copy_read_back_exactly(pg_url: str) -> None:
    """`db.pg_copy_rows` (how a run's corrections are staged on PostgreSQL): NULL and empty
    text kept apart, non-ASCII, quotes, commas, line breaks, backslashes, tabs, long text,
    JSON text into a json column, a text and a number every row shares, int4's bounds, rows
    sent out of order and in pieces; an int4 out of range or missing is refused before
    anything is sent."""
    texts = [
        None,
        "",
        "é€😀",
        'q"uote',
        "com,ma",
        "line\nbreak\r",
        "back\\slash",
        "\ttab",
        "x" * 5000,
    ]
    numbers = [0, -1, 2**31 - 1, -(2**31), 7, 8, 9, 10, 11]
    objects = [
        '{"k": [1, null], "é": "\\u00e9"}',
        None,
        "[]",
        "1",
        '"s"',
        "{}",
        "null",
        "2.5",
        "{}",
    ]
    rows = db.pg_copy_rows(
        [
            42,
            "shared, é",
            pa.array(numbers, pa.int64()),
            pa.array(texts, pa.string()),
            pa.array(texts[::-1], pa.string()),
            pa.array(objects, pa.string()),
        ]
    )
    assert len(rows) == len(numbers)
    engine = make_engine(pg_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE copied"
                " (k integer, s text, n integer, a text, b varchar(6000), j json)"
            )
            driver: Any = connection.connection.driver_connection
            with (
                driver.cursor() as cursor,
                cursor.copy("COPY copied FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(db.PG_COPY_HEADER)
                copy.write(db.pg_copy_data(rows.slice(4)))
                copy.write(db.pg_copy_data(rows.slice(0, 4)))
                copy.write(db.PG_COPY_TRAILER)
            stored = connection.exec_driver_sql(
                "SELECT k, s, n, a, b, CAST(j AS text) FROM copied"
            ).all()
    finally:
        engine.dispose()
    expected = list(
        zip([42] * 9, ["shared, é"] * 9, numbers, texts, texts[::-1], objects, strict=True)
    )
    assert sorted(map(tuple, stored), key=lambda row: row[2]) == sorted(
        expected, key=lambda row: row[2]
    )
    with pytest.raises(ValueError, match="out of range"):
        db.pg_copy_rows([pa.array([2**31], pa.int64())])
    with pytest.raises(ValueError, match="no NULL"):
        db.pg_copy_rows([pa.array([1, None], pa.int64())])
    assert len(db.pg_copy_data(db.pg_copy_rows([pa.array([], pa.string())]))) == 0


def _run_of(engine: Any, key: str, source: str) -> int:
    with Session(engine) as session:
        run = RemediationRun(run_key=key, trigger=RunTrigger.ERROR_REPORT, source=source)
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def test_handled_identifiers_are_those_of_the_runs_of_one_source(db_url: str) -> None:
    """The rows an error report skips: corrected or quarantined by any other run of that
    object, none of another object's."""
    engine = make_engine(db_url)
    try:
        for key, source, corrected, quarantined in (
            ("a1", "usage/a.csv", [1, 4], [2]),
            ("a2", "usage/a.csv", [7], [9, 4]),
            ("b1", "usage/b.csv", [3, 5], [6, 8]),
            ("c1", "usage/a.csv.bak", [10], [11]),
        ):
            run_id = _run_of(engine, key, source)
            with loads.AuditStage(engine, run_id, source) as audit:
                audit.add(
                    [
                        Correction(source, n, f"{key}-{n}", None, "c", "r", "f", "1", "2")
                        for n in corrected
                    ]
                )
                audit.load()
            with loads.QuarantineStage(engine, run_id, source) as held:
                held.add(
                    [(source, n, f"q{n}", "c", "why", None, None, "{}", WHEN) for n in quarantined]
                )
                held.load()
        assert lineage.handled_identifiers(engine, "usage/a.csv") == {
            "a1-1",
            "a1-4",
            "q2",
            "a2-7",
            "q9",
            "q4",
        }
        # a run done again (its crashed try's rows are deleted) counts only the others'
        assert lineage.handled_identifiers(engine, "usage/a.csv", other_than="a2") == {
            "a1-1",
            "a1-4",
            "q2",
        }
        assert lineage.handled_identifiers(engine, "usage/b.csv") == {"b1-3", "b1-5", "q6", "q8"}
        assert lineage.handled_identifiers(engine, "usage/none.csv") == frozenset()
    finally:
        engine.dispose()


def test_handled_identifiers_are_found_by_index_not_by_a_scan(sqlite_url: str) -> None:
    """Neither the audit (a row per correction of every run kept) nor the quarantined rows
    are read whole at each error report, nor the quarantined rows at each poller import: all
    are searched by run id (SQLite's plan), nor the re-runs of re-runs."""
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            queries = [
                *lineage.handled_queries("usage/a.csv"),
                lineage.correcting_queries("a")[1],
                lineage.reruns_of([1, 2]),
            ]
            tables = ("correction_audit", *["quarantined_rows"] * 3)
            for query, table in zip(queries, tables, strict=True):
                compiled = query.compile(engine, compile_kwargs={"render_postcompile": True})
                order = compiled.positiontup or []  # a bind used twice is one of `params`
                plan = connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {compiled}",
                    tuple(compiled.params[name] for name in order),
                ).all()
                steps = [str(step[-1]) for step in plan]
                assert not [s for s in steps if s.startswith(f"SCAN {table}")], steps
                assert [s for s in steps if s.startswith(f"SEARCH {table} USING")], steps
    finally:
        engine.dispose()
