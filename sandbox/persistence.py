"""The sandbox's state in a file, so a restart forgets nothing Stripe would remember.

What is kept: meters, customers, files (metadata in the state file, contents once each under
`<state file>.files/`), v1 and v2 events, accepted meter events, dropped duplicates, the
identifiers seen (Stripe's 24 h dedupe survives a restart), meter event sessions, queued
rejections not yet reported, import sets, the connector's seen objects, delivery log and the
options. Not kept: the request log, injected faults and the rate-limit window (test tools).

Every change is written before its HTTP answer leaves (`save_after_change`, and after the
timers' flush and connector passes), as one line appended to `<state file>.journal` and
flushed to disk (`sandbox.journal`): the entries the growing stores gained (meter events,
identifiers, duplicates, events, deliveries...) and, when they changed, the small stores whole
(options, meters, customers, file metadata, import sets). A change costs the size of the change,
not of the state: a meter event batch of 100 writes about 25 kB whatever was accepted before.
A crash while a line is written leaves it torn at the end of the journal, dropped on load: the
state is the previous one or the new one, never half of one.

The state file itself holds the whole state and the number of the last journal line it covers.
It is written again (compaction: a temporary file in the same directory, flushed, renamed over
the old one, then the journal emptied) at the first save, when a sandbox starts on a journal
not empty, and when the journal grows past the state file's size (and `COMPACT_AT_BYTES`), so
its cost spreads over the lines that made it. A crash between the rename and the emptying
leaves lines the state file covers: their numbers say so, and they are skipped on load.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, cast

from flask import Flask, Response, request

from sandbox.journal import (
    JOURNALED_DICTS,
    JOURNALED_LISTS,
    Changes,
    ChangeTracker,
    Journal,
    JournalError,
    fsync_directory,
)
from sandbox.runtime import Sandbox, current_sandbox
from sandbox.state import PendingError, SandboxOptions, SandboxState, StoredFile

FORMAT_VERSION = 2  # 1: the whole state written after every change, no journal
READABLE_VERSIONS = (1, 2)
DEFAULT_STATE_FILE = ".meterfix/sandbox-state.json"
STATE_FILE_ENV = "MFX_SANDBOX_STATE_FILE"
SMALL_STORES = ("meters", "customers", "import_sets")  # values changed in place: kept whole
JSON_STORES = SMALL_STORES + JOURNALED_DICTS + ("meter_events", "duplicates", "deliveries")
EXTRA_OPTIONS = ("connector_data_errors",)  # set as attributes on SandboxOptions by modules
COMPACT_AT_BYTES = 16 * 1024 * 1024  # the journal is folded in past this and the file's size


class StateFileError(RuntimeError):
    """The state file (or one of its file contents) cannot be read; the message says which."""


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.contents_dir = path.with_name(path.name + ".files")
        self.journal = Journal(path.with_name(path.name + ".journal"))
        self._write_lock = threading.Lock()
        self._written: set[str] = set()
        self._count_lock = threading.Lock()
        self._changes = 0  # save() calls so far, each after a finished change
        self._saved = 0  # changes covered by the files on disk
        self._tracker: ChangeTracker | None = None  # None: the next save writes the whole state
        self._small = ""  # the small stores as the files on disk hold them
        self._seq = 0  # the last journal line's number
        self._loaded_version: int | None = None
        self._snapshot_bytes = 0

    def load(self) -> SandboxState:
        """The saved state (the state file, then the journal's lines it does not cover), or a
        fresh one when the file does not exist yet."""
        if not self.path.exists():
            return SandboxState()
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("version") not in READABLE_VERSIONS:
                raise ValueError(f"unknown format version {saved.get('version')!r}")
            state = _state_from(saved)
            self._seq = int(saved.get("journal_seq", 0))
            for record in self.journal.read():
                if record["seq"] > self._seq:
                    _apply(state, record)
                    self._seq = record["seq"]
            for file_id, stored in state.files.items():  # the files kept to the end only
                stored.content = self._read_contents(file_id)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise StateFileError(
                f"sandbox state file {self.path} is unreadable ({reason})"
            ) from exc
        self._written = set(state.files)
        self._loaded_version = saved["version"]
        return state

    def start(self, state: SandboxState) -> None:
        """Take `state` (just loaded) as what the files hold; a journal with lines (or a torn
        one) or an older format is folded into a new state file first."""
        with self._write_lock:
            if not self.path.exists():
                return  # the first save writes the whole state
            journal = self.journal.path
            if self._loaded_version != FORMAT_VERSION or (
                journal.exists() and journal.stat().st_size
            ):
                self._compact(state)
                return
            with state.lock:
                self._tracker = ChangeTracker()
                self._tracker.baseline(state)
                self._small = _small_text(state)
            self._snapshot_bytes = self.path.stat().st_size

    def save(self, state: SandboxState) -> None:
        """Write what changed, after a change. One writer at a time; a caller whose change a
        newer write already covers returns at once (concurrent requests share one write)."""
        with self._count_lock:
            self._changes += 1
            mine = self._changes
        with self._write_lock:
            if self._saved >= mine:
                return
            with self._count_lock:
                covered = self._changes  # every one of these finished before the write
            try:
                if self._tracker is None:
                    self._compact(state)
                else:
                    self._append(state, self._tracker)
            except BaseException:
                self._tracker = None  # the changes taken are not on disk: the next save writes all
                raise
            self._saved = covered

    def _append(self, state: SandboxState, tracker: ChangeTracker) -> None:
        """One journal line with what changed (nothing when nothing did)."""
        with state.lock:  # only the small stores are serialised under the lock
            small = _small_text(state)
            changes = tracker.take(state)
            files = dict(state.files)
        if not changes and small == self._small:
            return
        self._write_contents(files)  # before the line that names them
        line = _journal_line(self._seq + 1, small if small != self._small else None, changes)
        self.journal.append(line)
        self._seq += 1
        self._small = small
        self._forget_contents(files)
        if self.journal.size > max(COMPACT_AT_BYTES, self._snapshot_bytes):
            self._compact(state)

    def _compact(self, state: SandboxState) -> None:
        """The whole state into the state file atomically, then an empty journal."""
        tracker = self._tracker or ChangeTracker()
        with state.lock:  # copies taken under the lock, serialised after it
            small = _small_text(state)
            copies = tracker.baseline(state)
            files = dict(state.files)
        self._write_contents(files)
        copies["pending_errors"] = [asdict(item) for item in copies["pending_errors"]]
        stores = json.dumps(copies, separators=(",", ":"))
        head = f'{{"version":{FORMAT_VERSION},"journal_seq":{self._seq},'
        data = f"{head}{small[1:-1]},{stores[1:]}".encode()
        _write_atomically(self.path, data)
        self.journal.clear()
        self._tracker, self._small, self._snapshot_bytes = tracker, small, len(data)
        self._forget_contents(files)
        for stray in self.contents_dir.iterdir():  # forgotten before a crash, or half written
            if stray.name not in files:
                stray.unlink(missing_ok=True)

    def _write_contents(self, files: dict[str, StoredFile]) -> None:
        self.contents_dir.mkdir(parents=True, exist_ok=True)
        for file_id in files.keys() - self._written:
            _write_atomically(self.contents_dir / file_id, files[file_id].content)
            self._written.add(file_id)

    def _forget_contents(self, files: dict[str, StoredFile]) -> None:
        """Unlink the contents of files a reset forgot (once the files on disk forgot them)."""
        for file_id in self._written - files.keys():
            (self.contents_dir / file_id).unlink(missing_ok=True)
        self._written &= files.keys()

    def _read_contents(self, file_id: str) -> bytes:
        return (self.contents_dir / file_id).read_bytes()


def keep_state_in(app: Flask, path: Path) -> StateFile:
    """Load the sandbox app's state from `path` and save it after every change."""
    sandbox = cast(Sandbox, app.extensions["sandbox"])
    state_file = StateFile(path)
    sandbox.state = state_file.load()
    state_file.start(sandbox.state)
    sandbox.state_file = state_file
    app.after_request(save_after_change)
    return state_file


def save_after_change(response: Response) -> Response:
    """Flask after-request hook: anything but a read may have changed the state."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        current_sandbox().persist()
    return response


def _small_text(state: SandboxState) -> str:
    """The small stores as one JSON object (under the state's lock: meters change in place)."""
    options = asdict(state.options)
    for name in EXTRA_OPTIONS:
        if hasattr(state.options, name):
            options[name] = str(getattr(state.options, name))
    small = {
        "options": options,
        "files": {file_id: stored.obj for file_id, stored in state.files.items()},
        **{name: getattr(state, name) for name in SMALL_STORES},
    }
    return json.dumps(small, separators=(",", ":"))


def _journal_line(seq: int, small: str | None, changes: Changes) -> bytes:
    parts = [f'"seq":{seq}']
    if small is not None:
        parts.append(f'"small":{small}')
    for kind, stores in changes.items():
        parts.append(f'"{kind}":{json.dumps(stores, separators=(",", ":"), default=_encode)}')
    return ("{" + ",".join(parts) + "}\n").encode()


def _encode(value: object) -> Any:
    if is_dataclass(value) and not isinstance(value, type):  # the queued PendingErrors
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _state_from(saved: dict[str, Any]) -> SandboxState:
    state = SandboxState()
    _apply_small(state, saved)
    for name in JSON_STORES:
        setattr(state, name, type(getattr(state, name))(saved.get(name) or ()))
    state.pending_errors = [PendingError(**item) for item in saved["pending_errors"]]
    return state


def _apply_small(state: SandboxState, small: dict[str, Any]) -> None:
    """The small stores (file contents are read once the whole journal is applied)."""
    known = {f.name for f in fields(SandboxOptions)}
    options = SandboxOptions(**{k: v for k, v in small["options"].items() if k in known})
    for name in EXTRA_OPTIONS:
        if name in small["options"]:
            setattr(options, name, small["options"][name])
    state.options = options
    state.files = {
        file_id: StoredFile(obj=obj, content=b"") for file_id, obj in small["files"].items()
    }
    for name in SMALL_STORES:
        setattr(state, name, dict(small[name]))


def _apply(state: SandboxState, record: dict[str, Any]) -> None:
    """One journal line onto the state being loaded."""
    if record.get("small") is not None:
        _apply_small(state, record["small"])
    for name, values in record.get("replace", {}).items():
        setattr(state, name, type(getattr(state, _journaled(name)))(_entries(name, values)))
    for name, values in record.get("append", {}).items():
        getattr(state, name).extend(_entries(_journaled(name, JOURNALED_LISTS), values))
    for name, values in record.get("set", {}).items():
        dict.update(getattr(state, _journaled(name, JOURNALED_DICTS)), values)


def _journaled(name: str, among: tuple[str, ...] = JOURNALED_LISTS + JOURNALED_DICTS) -> str:
    if name not in among:
        raise JournalError(f"a journal line names {name!r}, not a journaled store")
    return name


def _entries(name: str, values: Any) -> Any:
    return [PendingError(**item) for item in values] if name == "pending_errors" else values


def _write_atomically(path: Path, data: bytes) -> None:
    """Temporary file in the same directory, fsync, rename over `path`, fsync the directory."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)
