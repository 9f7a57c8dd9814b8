"""Alembic migrations shipped inside the package: `upgrade` (one at a time, refusing a
database a newer release upgraded) and the engine `migrations/env.py` runs them on. Apart from
the engine: `meterfix db upgrade`, the worker's schema check, the tests and the benches use
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text

from service.db import make_engine
from service.db.locks import advisory_lock
from service.errors import SchemaNewer

# service/migrations, beside this package
MIGRATIONS_DIR = Path(__file__).parents[1] / "migrations"

# The seed of the advisory-lock id `upgrade` holds on PostgreSQL ("mfx_migr").
MIGRATION_LOCK_KEY = 0x6D66785F6D696772


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations shipped inside the package (works from any directory). On
    PostgreSQL one upgrade at a time (two pods' `release` at once): the second reads the
    revision only once the first committed, and finds nothing left to do. On SQLite the
    migrations' `BEGIN IMMEDIATE` (`migration_engine`) does the same."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = make_engine(url)
    try:
        if not url.startswith("postgresql"):
            _require_known_revision(engine)
            command.upgrade(config, revision)
            return
        _require_schema(engine)
        with advisory_lock(engine, MIGRATION_LOCK_KEY, wait=True):
            _require_known_revision(engine)
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def _require_known_revision(engine: Engine) -> None:
    """SchemaNewer when the database is at a revision no migration here names: Alembic's own
    "Can't locate revision" said neither why (a newer release upgraded it, and this one was
    deployed after) nor what to do."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
    unknown = sorted(set(current) - known)
    if unknown:
        raise SchemaNewer(
            f"the database is at revision {unknown[0]!r}, which this meterfix release does not "
            "know: a newer meterfix release upgraded it; run that release (or newer), or "
            "restore the backup taken before that upgrade"
        )


def _require_schema(engine: Engine) -> None:
    """A clear reason when no schema of the search_path exists (a DATABASE_URL's
    `options=-csearch_path=...` naming one not created): there is nothing to migrate into,
    nor a current schema to derive the upgrade's lock from."""
    with engine.connect() as connection:
        if connection.execute(text("SELECT current_schema()")).scalar() is None:
            path = connection.execute(text("SHOW search_path")).scalar()
            raise ValueError(f"no schema of the search_path ({path}) exists: create it first")


def migration_engine(url: str) -> Engine:
    """The engine migrations run on (`migrations/env.py`): `make_engine`'s, and on SQLite
    every migration in one transaction with foreign keys off (see `_sqlite_migration`)."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_migration)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_migration(dbapi_connection: Any, _record: object = None) -> None:
    """sqlite3 opens a transaction before INSERT, UPDATE and DELETE only: each CREATE, DROP
    and ALTER of a migration committed at once, so a migration stopped midway (a full disk)
    left its `_alembic_tmp_<table>` behind and every later upgrade failed on it. Driver
    autocommit here, and `_sqlite_begin` opens the transaction itself. Foreign keys off
    (outside any transaction, where SQLite honours the pragma): rebuilding a table in batch
    mode drops the old one, and with foreign keys on that deleted, by ON DELETE CASCADE,
    every row that pointed at it (0003 emptied the audit, outputs and quarantine)."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE: a second upgrade waits here (busy timeout) and then reads the new revision
    connection.exec_driver_sql("BEGIN IMMEDIATE")
