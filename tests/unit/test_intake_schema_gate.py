"""Intake's schema check says what the worker's says (intake may not import the worker, so
`service/intake/schema_gate.py` holds its own copy): the same refusal, in the same words, for
a database never migrated, one behind, at head, and one a newer release upgraded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from service.errors import InboxUnavailable, SchemaNotCurrent
from service.intake import schema_gate
from service.worker import schema as worker_schema


def _previous_revision() -> str:
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    head = scripts.get_revision(scripts.get_current_head())
    assert head is not None and isinstance(head.down_revision, str)
    return head.down_revision


def _never_migrated(url: str) -> None:
    return None


def _behind(url: str) -> None:
    upgrade(url, _previous_revision())


def _newer(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_later'"))
    engine.dispose()


def _answer(check: Callable[[Engine], None], engine: Engine) -> str | None:
    try:
        check(engine)
    except SchemaNotCurrent as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        (_never_migrated, "the database is not migrated"),
        (_behind, "the database schema is not up to date"),
        (upgrade, None),
        (_newer, None),
    ],
)
def test_intake_and_worker_give_the_same_answer(
    tmp_path: Path, prepare: Callable[[str], None], expected: str | None
) -> None:
    url = f"sqlite:///{tmp_path / 'meterfix.db'}"
    prepare(url)
    engine = make_engine(url)
    try:
        assert _answer(schema_gate.check_schema, engine) == expected
        assert _answer(worker_schema.check_schema, engine) == expected
    finally:
        engine.dispose()


def test_the_gate_asks_until_the_schema_is_current_then_never_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'later' / 'meterfix.db'}"
    engine = make_engine(url)
    gate = schema_gate.SchemaGate()
    try:
        with pytest.raises(InboxUnavailable):  # unreachable: the directory is not there yet
            gate.require(engine)
        (tmp_path / "later").mkdir()
        with pytest.raises(SchemaNotCurrent, match="not migrated"):
            gate.require(engine)
        upgrade(url)
        gate.require(engine)
        with engine.begin() as connection:  # asked again, this would be refused
            connection.execute(text("DELETE FROM alembic_version"))
        gate.require(engine)
    finally:
        engine.dispose()
