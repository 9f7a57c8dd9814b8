"""One holder at a time across processes: advisory locks on PostgreSQL, a file lock beside
a SQLite file, and the lock held until a transaction ends. Apart from the engine: the poller,
the notify leader, quarantine re-runs and the migrations take them."""

from __future__ import annotations

import fcntl
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from service.db import is_postgres
from service.logs import log_event

# What a transaction committing a lock holder's work calls first: `HeldLock.fence`, or
# `unfenced` where no lock is held; raises `LockLost`.
Fence = Callable[[Connection], None]


def unfenced(connection: Connection) -> None:
    """No lock held: nothing to check."""


# Advisory locks are shared by the whole PostgreSQL cluster: the id is derived from the lock's
# seed and name and from the database and schema, so two meterfix installations (or test runs)
# in different databases or schemas of one server never hold each other's locks.
_LOCK_ID = text(
    "SELECT hashtextextended(current_database() || '.' || current_schema() || :name, :seed)"
)
# A session lock's id, and the id of its fence (`HeldLock.fence`)
_LOCK_IDS = text(
    "SELECT hashtextextended(current_database() || '.' || current_schema() || :name, :seed), "
    "hashtextextended(current_database() || '.' || current_schema() || :fence, :seed)"
)


class LockLost(Exception):
    """A session lock its holder took is no longer held: its database connection dropped
    (PostgreSQL restarted or failed over, `idle_session_timeout`, a proxy's or NAT's idle
    timeout, `pg_terminate_backend`), and PostgreSQL let the lock go with it; another process
    may hold it now. The holder stops without committing; its item is retried."""

    def __init__(self, what: str) -> None:
        self.reason = (
            f"the lock {what} was lost (its database connection dropped): stopped without "
            "committing, another holder may have taken it"
        )
        super().__init__(self.reason)


class HeldLock:
    """A lock `session_lock` took (true when taken): `held()` whether it still is, `check()`
    raises `LockLost` when it is not, `fence(connection)` does so inside the caller's
    transaction. On a SQLite file (a file lock, held while the process lives) or in memory it
    cannot be lost: all three say it is held."""

    def __init__(self, taken: bool, what: str, holder: _PgHolder | None = None) -> None:
        self.taken, self.what, self._holder = taken, what, holder

    def __bool__(self) -> bool:
        return self.taken

    def held(self) -> bool:
        """Whether the lock is held still, asked on its own connection (a dropped one says
        no: the lock went with it)."""
        if not self.taken:
            return False
        return self._holder is None or self._holder.held()

    def check(self) -> None:
        """`LockLost` unless the lock is held still: before work another holder would
        duplicate (an upload, a send)."""
        if not self.held():
            raise LockLost(self.what)

    def fence(self, connection: Connection) -> None:
        """`LockLost` unless the lock is held still, first in the transaction that commits
        the holder's work: PostgreSQL is asked whether the lock's connection (its backend,
        by pid and start) holds it, under a lock a next holder waits for before its work
        (`session_lock`), so the transaction commits before the next holder reads, or not
        at all; a check before the transaction left the time between them open."""
        if not self.taken:
            raise LockLost(self.what)
        if self._holder is not None and not self._holder.fenced(connection):
            raise LockLost(self.what)


# Whether a backend holds a session advisory lock of a bigint key: pg_locks splits the key
# into classid (high 32 bits) and objid (low 32 bits), objsubid 1.
_HOLDS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND ((l.classid::int8 << 32) | l.objid::int8) = :key "
    "AND l.pid = {pid} AND a.backend_start = {started})"
)
_HOLDS_HERE = text(_HOLDS.format(pid="pg_backend_pid()", started="a.backend_start"))
_HOLDS_THERE = text(_HOLDS.format(pid=":pid", started=":started"))
_HOLDER = text(
    "SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity "
    "WHERE pid = pg_backend_pid()), current_setting('server_version_num')::int"
)


class _PgHolder:
    """The connection a PostgreSQL session lock is held on, its backend, and the key of its
    fence (the lock a fenced transaction holds shared, and a next holder takes alone)."""

    def __init__(self, connection: Connection, key: int, fence_key: int) -> None:
        self.connection, self.key, self.fence_key = connection, key, fence_key
        row = connection.execute(_HOLDER).one()
        self.pid, self.started, self.version = int(row[0]), row[1], int(row[2])
        self.lost, self.error = False, ""

    def held(self) -> bool:
        if self.lost:
            return False
        try:
            held = bool(self.connection.execute(_HOLDS_HERE, {"key": self.key}).scalar())
            self.connection.commit()
        except SQLAlchemyError as exc:  # the connection is gone, and the lock with it
            self.error = _error_name(exc)
            self.connection.rollback()  # a connection SQLAlchemy found gone: invalidated
            held = False
        self.lost = not held
        return held

    def fenced(self, connection: Connection) -> bool:
        connection.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), self._fence())
        there = {"key": self.key, "pid": self.pid, "started": self.started}
        return bool(connection.execute(_HOLDS_THERE, there).scalar())

    def _fence(self) -> dict[str, int]:
        return {"key": self.fence_key}


@contextmanager
def session_lock(engine: Engine, seed: int, name: str = "", *, wait: bool) -> Iterator[HeldLock]:
    """One holder at a time across processes, as `advisory_lock`, yielding the `HeldLock`
    (true when taken) by which the holder learns whether it is held still. On PostgreSQL the
    lock lives only as long as its connection, which waits idle while the holder works: when
    it drops, the lock goes, another process takes it, and a holder that did not ask did the
    same work as that one. So a holder calls `check()` before what another holder would
    duplicate outside the database (an upload, a message), and `fence(connection)` first in
    each transaction that commits its work; both raise `LockLost`, upon which it stops
    without committing (its item is retried, and finds what the other holder did). E.g.:

        with session_lock(engine, SEED, wait=False) as lock:
            if not lock:
                return  # another process holds it
            ...
            lock.check()  # before each send
            with engine.begin() as connection:
                lock.fence(connection)  # first in the transaction recording what was sent
                ...

    Taken on PostgreSQL, the lock then waits for the transactions a holder before fenced
    and has not ended (a fence passed just before that holder's connection dropped), so what
    they commit is seen by its holder. Its connection does not time out for being idle
    (`idle_session_timeout` is off on it, PostgreSQL 14 on); a proxy or NAT may still drop it."""
    what = f"{seed:#x}{':' + name if name else ''}"
    if not is_postgres(engine):
        path = _sqlite_lock_path(engine, seed, name)
        if path is None:
            yield HeldLock(True, what)
            return
        with _file_lock(path, wait=wait) as taken:
            yield HeldLock(taken, what)
        return
    with engine.connect() as connection:
        names = {"seed": seed, "name": name, "fence": f"{name}:fence"}
        keys = connection.execute(_LOCK_IDS, names).one()
        key = {"key": int(keys[0])}
        if wait:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
            taken = True
        else:
            taken = bool(
                connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar()
            )
        connection.commit()
        if not taken:
            yield HeldLock(False, what)
            return
        holder = _PgHolder(connection, key["key"], int(keys[1]))
        try:
            ready = _take_over(holder, wait=wait)
        except BaseException:
            connection.invalidate()  # its session ends: PostgreSQL lets the lock go
            raise
        if not ready:
            connection.invalidate()
            yield HeldLock(False, what)
            return
        try:
            yield HeldLock(True, what, holder)
        finally:
            _let_go(holder, what)


# How long a caller that only tries (`wait=False`: a poller pass, a notify leader) waits for a
# holder before's fenced transactions to end: one paused (SIGSTOP, a frozen VM) holding one
# open would otherwise hold the new holder, and the lock, without end.
TRY_FENCE_SECONDS = 10


def _take_over(holder: _PgHolder, *, wait: bool) -> bool:
    """After the lock is taken: wait for a holder before's fenced transactions to end, and
    keep the connection from timing out idle. False when a caller that only tries would wait
    longer than TRY_FENCE_SECONDS (the lock is then not taken)."""
    connection = holder.connection
    if not wait:
        connection.execute(text(f"SET LOCAL lock_timeout = '{TRY_FENCE_SECONDS}s'"))
    try:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), holder._fence())
    except DBAPIError as exc:
        if wait or getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        connection.rollback()
        return False
    if holder.version >= IDLE_SESSION_TIMEOUT_SINCE:
        connection.execute(text("SET idle_session_timeout = 0"))
    connection.commit()
    return True


LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout ran out


def _let_go(holder: _PgHolder, what: str) -> None:
    """Unlock, and hand the connection back as it was; a connection gone let the lock go
    already (logged: the holder's work is what it committed, or failed, before)."""
    connection = holder.connection
    try:
        if holder.lost:
            raise LockLost(what)
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": holder.key})
        if holder.version >= IDLE_SESSION_TIMEOUT_SINCE:
            connection.execute(text("RESET idle_session_timeout"))
        connection.commit()
    except (SQLAlchemyError, LockLost) as exc:
        connection.rollback()
        error = holder.error or _error_name(exc)
        log_event("db.lock_lost", level=logging.WARNING, lock=what, error=error)


def _error_name(exc: Exception) -> str:
    """The driver's error under SQLAlchemy's (`AdminShutdown`), or the error's own name."""
    original = exc.orig if isinstance(exc, DBAPIError) else None
    return type(original).__name__ if original is not None else type(exc).__name__


# `idle_session_timeout` came with PostgreSQL 14 (server_version_num)
IDLE_SESSION_TIMEOUT_SINCE = 140000


@contextmanager
def advisory_lock(engine: Engine, seed: int, name: str = "", *, wait: bool) -> Iterator[bool]:
    """One holder at a time across processes: on PostgreSQL a session advisory lock held on a
    connection of its own while the block runs (let go with the connection if the process
    dies). `wait`: wait for it (yields True); else try once and yield whether it was taken.
    On a SQLite file, a file lock beside it (`meterfix poll` beside `meterfix worker` are two
    processes on one file; let go by the system if the process dies too); an in-memory
    database has one process. The lock goes with its connection, unnoticed here: a holder
    whose work another holder must not repeat takes `session_lock`, which tells it."""
    with session_lock(engine, seed, name, wait=wait) as lock:
        yield lock.taken


def transaction_lock(
    connection: Connection, seed: int, name: str = "", *, shared: bool = False
) -> None:
    """Hold a lock until the caller's transaction ends, for what must not change between a
    check and the write it allows (waiting for a holder). Call it first in the transaction.
    PostgreSQL: a transaction advisory lock, `shared` ones held side by side. SQLite: the
    database's write lock (BEGIN IMMEDIATE: one writer at a time, `shared` or not), taken
    before the transaction reads, so what it reads stays so until it commits."""
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    key = {"key": int(connection.execute(_LOCK_ID, {"seed": seed, "name": name}).scalar_one())}
    take = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    connection.execute(text(f"SELECT {take}(:key)"), key)


def _sqlite_lock_path(engine: Engine, seed: int, name: str) -> Path | None:
    """`<database file>.lock-<id>` for a SQLite file; None in memory."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12]
    db_file = Path(database)
    return db_file.with_name(f"{db_file.name}.lock-{digest}")


@contextmanager
def _file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An exclusive `flock` on `path` (kept: removing a lock file races with its next
    holder); whether it was taken. Two opens conflict in one process too."""
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
