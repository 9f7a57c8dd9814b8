"""The migrations produce exactly the schema the models declare (no drift)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlmodel import SQLModel

import service.models  # noqa: F401
from service.db import make_engine
from service.db.migrate import MIGRATIONS_DIR, upgrade
from tests.conftest import DB_PARAMS, PG_URL, _pg_schema_url


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_every_table_is_created(db_url: str) -> None:
    from sqlalchemy import inspect

    engine = make_engine(db_url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(SQLModel.metadata.tables) <= names


def _empty_database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _written_at(url: str, revision: str, row: str) -> Engine:
    """The database at `revision` holding run 7 and one row of its (`row`: an INSERT), written
    as that revision's schema holds them (raw SQL: the models are today's); its engine."""
    upgrade(url, revision)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO remediation_runs (id, run_key, trigger, source, generation,"
                " status, input_rows, valid, corrected, quarantined, by_code, created_at)"
                " VALUES (7, 'k', 'cli', 's', 1, 'done', 1, 0, 1, 0, '{}', CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(text(row))
    return engine


@pytest.mark.parametrize("kind", DB_PARAMS)
def test_0004_audit_for_bulk_loads_keeps_the_rows(kind: str, tmp_path: Path) -> None:
    """correction_audit loses its foreign key to remediation_runs (checked once per load by
    AuditStage instead), gets its two indexes and byte-ordered identifiers on PostgreSQL; the
    rows written before stay."""
    for url in _empty_database(kind, tmp_path):
        engine = _written_at(
            url,
            "0003",
            "INSERT INTO correction_audit (run_id, source, row_number, identifier,"
            " new_identifier, code, rule, field, before, after)"
            " VALUES (7, 's', 1, 'a', 'a-mfx1', 'c', 'r', 'f', '1', '2')",
        )
        assert inspect(engine).get_foreign_keys("correction_audit") != []
        engine.dispose()
        upgrade(url, "0004")
        engine = make_engine(url)
        schema = inspect(engine)
        assert schema.get_foreign_keys("correction_audit") == []
        assert schema.get_foreign_keys("quarantined_rows") != []  # that one stays (till 0005)
        collations = {
            c["name"]: getattr(c["type"], "collation", None)
            for c in schema.get_columns("correction_audit")
        }
        expected = "C" if kind == "postgresql" else None  # SQLite compares bytes anyway
        assert (collations["identifier"], collations["new_identifier"]) == (expected, expected)
        indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("correction_audit")}
        assert indexes == {
            "ix_correction_audit_new_identifier": ["new_identifier"],
            "ix_correction_audit_run_id_identifier": ["run_id", "identifier"],
        }
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT run_id, identifier, new_identifier, before, after FROM correction_audit"
                )
            ).all()
        engine.dispose()
        assert [tuple(row) for row in rows] == [(7, "a", "a-mfx1", "1", "2")]


@pytest.mark.parametrize("kind", DB_PARAMS)
def test_0005_quarantine_for_bulk_loads_keeps_the_rows(kind: str, tmp_path: Path) -> None:
    """quarantined_rows loses its foreign key to remediation_runs (checked once per insert by
    `insert_quarantined` instead) and compares identifiers and customers byte by byte on
    PostgreSQL; its indexes and the rows written before stay, and a downgrade gives the key
    back."""
    for url in _empty_database(kind, tmp_path):
        engine = _written_at(
            url,
            "0004",
            "INSERT INTO quarantined_rows (run_id, source, row_number, identifier, code,"
            " reason, meter, customer, record, created_at) VALUES (7, 's', 1, 'a',"
            " 'c', 'why', 'm', 'cus_1', '{\"x\": 1}', CURRENT_TIMESTAMP)",
        )
        before = {
            i["name"]: i["column_names"] for i in inspect(engine).get_indexes("quarantined_rows")
        }
        assert inspect(engine).get_foreign_keys("quarantined_rows") != []
        engine.dispose()
        upgrade(url)
        engine = make_engine(url)
        schema = inspect(engine)
        assert schema.get_foreign_keys("quarantined_rows") == []
        assert schema.get_foreign_keys("output_objects") != []  # that one stays
        collations = {
            c["name"]: getattr(c["type"], "collation", None)
            for c in schema.get_columns("quarantined_rows")
        }
        expected = "C" if kind == "postgresql" else None  # SQLite compares bytes anyway
        assert (collations["identifier"], collations["customer"]) == (expected, expected)
        later = {"ix_quarantined_rows_rerun_id": ["rerun_id"]}  # 0012
        assert {i["name"]: i["column_names"] for i in schema.get_indexes("quarantined_rows")} == (
            before | later
        )
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT run_id, identifier, customer, reason FROM quarantined_rows")
            ).all()
        engine.dispose()
        assert [tuple(row) for row in rows] == [(7, "a", "cus_1", "why")]
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.downgrade(config, "0004")
        engine = make_engine(url)
        assert inspect(engine).get_foreign_keys("quarantined_rows") != []
        with engine.connect() as connection:
            assert connection.execute(text("SELECT identifier FROM quarantined_rows")).all() == [
                ("a",)
            ]
        engine.dispose()
