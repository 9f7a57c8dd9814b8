"""The schema check the worker, the web and intake share (`service/db/schema.py`): its
refusal, in its words, for a database never migrated, one behind, at head, and one a newer
release upgraded; and intake's gate, which asks it until the schema is current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from service.db.schema import check_schema
from service.errors import InboxUnavailable, SchemaNotCurrent
from service.intake import schema_gate


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
def test_the_schema_check_answers_for_each_state(
    tmp_path: Path, prepare: Callable[[str], None], expected: str | None
) -> None:
    url = f"sqlite:///{tmp_path / 'meterfix.db'}"
    prepare(url)
    engine = make_engine(url)
    try:
        assert _answer(check_schema, engine) == expected
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
