"""The poller's failed-records file of one object: the rows that failed validation, in the
input's format, with `error_code` and `error_message` columns, handed to remediation, and
beside it the object's row number of each (`store.source_row_numbers`); and the clearing of
the files no import set records."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from array import array
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import URL, Engine

from remediation.formats import FileFormat, RecordWriter, read_records
from remediation.limits import DEFAULT_LIMITS, FieldLimits
from remediation.readers import CsvRecords
from remediation.records import UsageRecord
from service.jobs.store.reports import import_sets
from service.logs import log_event
from service.models import ImportSet
from service.poller.store import row_numbers_path

# How long a file no import set records is kept after its pass last wrote it: a pass whose
# lock dropped right after its last check records its file still (`clear_unrecorded_files`)
UNRECORDED_KEPT_SECONDS = 3600.0


def failed_records_path(
    work_dir: Path, engine: Engine, import_set_id: str, fmt: FileFormat
) -> Path:
    """A name of its own for one pass's file, after the import set (`clear_remediated_files`
    reads the id back): a pass whose lock dropped, going on late, started afresh (removed or
    truncated) the file the next pass of the same version had recorded under the one name
    a version had. In the database's own part of `work_dir` (`database_files_dir`). CSV
    input keeps CSV; JSON input gives JSON Lines."""
    suffix = "csv" if fmt is FileFormat.CSV else "jsonl"
    name = f"{import_set_id}.failed.{uuid.uuid4().hex[:16]}.{suffix}"
    return database_files_dir(work_dir, engine) / name


def database_files_dir(work_dir: Path, engine: Engine) -> Path:
    """The part of `work_dir` holding the failed-records files of `engine`'s database: two
    installations started from one directory share the default MFX_WORK_DIR (relative), and
    a pass of one deleted, as recorded by no import set of its own, the other's file still
    waiting for its remediation (refused rows never quarantined). Named by a digest of where
    the database is, never its URL or credentials (`_database_digest`). Files written before
    it had a part of its own are in `work_dir` itself: read where recorded, and kept until
    remediated."""
    return work_dir / f"db-{_database_digest(engine.url)}"


def database_files_dirs(work_dir: Path, engine: Engine) -> list[Path]:
    """The database's own part of `work_dir`, and the part a release naming it by the whole
    URL made (`_url_digest`) when there is one: the files a pass killed there left, or a
    remediation done there, are the database's to clear. A recorded file stays where it is
    (its import set names its path) until remediated."""
    own = database_files_dir(work_dir, engine)
    earlier = work_dir / f"db-{_url_digest(engine.url)}"
    return [own, earlier] if earlier != own and earlier.is_dir() else [own]


# Query keys that never say which database (secrets, TLS files, timeouts, names shown to the
# server): every other key is kept, an unknown one too (`service=prod`, `user=a`): a part too
# specific only leaves a file uncleared, a part shared loses one (the other's clearing)
_NOT_WHERE = ("pass", "ssl", "timeout", "keepalives", "application_name", "tcp_user")


def _database_digest(url: URL) -> str:
    """Which database: its kind (not the driver), host, port (PostgreSQL's 5432 when left
    out) and name, the user on a server (PostgreSQL's default schema is named after it: two
    installations in one database as two users must not share a folder, where each clears
    the files the other has not recorded yet), and the query but for `_NOT_WHERE`; a SQLite
    file by its absolute path. Not the password, nor the driver: a password rotated or a
    process connecting through another driver moved the part, and the files a pass killed
    in the old one left were never cleared."""
    backend = url.get_backend_name()
    database = _database_path(url)
    query = sorted(
        (k, str(v)) for k, v in url.query.items() if not any(n in k.lower() for n in _NOT_WHERE)
    )
    port = url.port or (5432 if backend == "postgresql" else "")
    user = "" if backend == "sqlite" else url.username or ""
    where = [backend, (url.host or "").lower(), str(port), database or "", repr(query), user]
    return hashlib.sha256("\n".join(where).encode()).hexdigest()[:12]


def _url_digest(url: URL) -> str:
    """The digest a release before `_database_digest` named the part by: the whole URL,
    credentials included (`URL.set(username=None)` leaves the user as it is)."""
    rendered = url.set(database=_database_path(url)).render_as_string(hide_password=False)
    return hashlib.sha256(rendered.encode()).hexdigest()[:12]


def _database_path(url: URL) -> str | None:
    """The database's name; a SQLite file's absolute path."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return str(Path(str(url.database)).resolve())
    return url.database


def discard_failed_records(path: Path) -> None:
    """Remove a pass's file that no import set records (the pass stopped before it recorded
    one), and its rows' numbers: its own name, no other pass's file."""
    path.unlink(missing_ok=True)
    row_numbers_path(path).unlink(missing_ok=True)


def failed_records_files(*dirs: Path) -> dict[str, list[Path]]:
    """Import set id -> its failed-records files in `dirs`: each pass's file, and its rows'
    numbers beside it."""
    found: dict[str, list[Path]] = {}
    for path in (path for where in dirs for path in where.glob("*.failed.*")):
        found.setdefault(path.name.split(".failed.")[0], []).append(path)
    return found


def recorded_import_sets(engine: Engine, ids: Sequence[str], size: int = 500) -> list[ImportSet]:
    """The recorded import sets of these ids, `size` a query."""
    ids = sorted(ids)
    return [s for at in range(0, len(ids), size) for s in import_sets(engine, ids[at : at + size])]


def clear_unrecorded_files(engine: Engine, work_dir: Path) -> int:
    """Delete the failed-records files in the database's own part of `work_dir`
    (`database_files_dirs`: another installation sharing the directory has its own; and the
    part an earlier release named by the whole URL, removed once empty) that
    their import set does not record (or no import set: none recorded), last written over
    UNRECORDED_KEPT_SECONDS ago; how many. A pass killed before it recorded its file
    (SIGKILL, out of memory) ran no cleanup, and every later pass writes under a name of its
    own: when the version's import set came to record none (no row failed again, the
    version given up) or another, nothing ever deleted it. Run by a pass holding the poller
    lock, before it imports: no other pass can record a file (one whose lock dropped finds
    the import set's save fenced, and removes its own), and one a pass still writes is
    recent (`FailedRecords` touches it on closing), so an old one is no live pass's. A file
    an import set records stays until its remediation is done (`jobs.remediation`,
    `job.clear_remediated_files`), as do the files written in `work_dir` itself before the
    database had a part of its own. A failure is logged: the next pass tries again."""
    dirs = database_files_dirs(work_dir, engine)
    found = failed_records_files(*dirs)
    try:
        recorded = _recorded_names(engine, list(found))
        old = time.time() - UNRECORDED_KEPT_SECONDS
        left = [
            path
            for paths in found.values()
            for path in paths
            if path.name.removesuffix(".rows") not in recorded and _written_before(path, old)
        ]
        for path in left:
            path.unlink(missing_ok=True)
        for emptied in dirs[1:]:  # the earlier part, once its last file is gone
            with suppress(OSError):
                emptied.rmdir()
    except Exception as exc:  # loop edge: the pass goes on, the next one tries again
        log_event(
            "poller.clear_unrecorded_failed",
            level=logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}"[:500],
        )
        return 0
    if left:
        log_event("poller.unrecorded_files_cleared", files=len(left))
    return len(left)


def _recorded_names(engine: Engine, ids: Sequence[str]) -> set[str]:
    """The names of the failed-records files the import sets of these ids record."""
    paths = (s.detail.get("failed_records_path") for s in recorded_import_sets(engine, ids))
    return {Path(str(path)).name for path in paths if path}


def _written_before(path: Path, when: float) -> bool:
    try:
        return path.stat().st_mtime < when
    except FileNotFoundError:  # deleted meanwhile (its remediation done)
        return False


class FailedRecords:
    """The failed-records file of one object, in the input's format (CSV keeps its header;
    JSON input gives JSON Lines). Opened lazily: no failed rows, no file."""

    def __init__(self, path: Path, fmt: FileFormat) -> None:
        self.path, self.fmt = path, fmt
        self.columns: list[str] | None = None
        self._writer: RecordWriter | None = None
        self._handle: Any = None
        self._csv: CsvRecords | None = None
        self._numbers: Any = None

    def __enter__(self) -> FailedRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            self._handle.close()
            self._numbers.close()
            # written now, whenever the last buffer went out: the age by which a file no
            # import set records is cleared counts from here (`clear_unrecorded_files`).
            # Deleted meanwhile (another process's clear): nothing to age, and the pass
            # leaves as it was leaving (LockLost, or no exception), not on FileNotFoundError
            with suppress(FileNotFoundError):
                os.utime(self.path)
                os.utime(row_numbers_path(self.path))

    def open_records(
        self, stream: Any, limits: FieldLimits = DEFAULT_LIMITS
    ) -> Iterable[UsageRecord]:
        """The object's records, read as the remediation core reads them, under the same
        field limits (a CSV as columns: its header, which the failed rows keep, is known
        once its rows are read). The readers held the default nesting depth whatever the
        rules' `max_json_depth`: rows `meterfix remediate` refuses were sent."""
        records = read_records(stream, self.fmt, limits=limits)
        self._csv = records if isinstance(records, CsvRecords) else None
        return records

    def write(self, groups: Iterable[list[UsageRecord]]) -> int:
        """Write the rows, and their row numbers in the object beside them: remediation
        reads the file, numbered from 1, and would otherwise look the numbers up by
        identifier among the rows the poller recorded, one an identifier (`k1` in
        milliseconds beside a valid `k1` the poller sent was given the sent row's)."""
        numbers = array("q")
        for record in (rec for group in groups for rec in group):
            self._ensure_writer().write(record)
            numbers.append(record.row_number)
        if numbers:
            self._numbers.write(np.asarray(numbers, dtype="<i8").tobytes())
        return len(numbers)

    def _ensure_writer(self) -> RecordWriter:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # created, never truncated: the path is this pass's own (`failed_records_path`)
            self._handle = self.path.open("xb")
            self._numbers = row_numbers_path(self.path).open("xb")
            if self._csv is not None and self.columns is None:
                header = self._csv.columns_header
                self.columns = None if header is None else list(header)
            out_fmt = FileFormat.CSV if self.fmt is FileFormat.CSV else FileFormat.JSONL
            self._writer = RecordWriter(
                self._handle, out_fmt, columns=self.columns, with_errors=True
            )
        return self._writer
