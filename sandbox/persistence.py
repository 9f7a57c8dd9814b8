"""The sandbox's state in a file, so a restart forgets nothing Stripe would remember.

What is kept: meters, customers, files (metadata in the state file, contents once each under
`<state file>.files/`), v1 and v2 events, accepted meter events, dropped duplicates, the
identifiers seen (Stripe's 24 h dedupe survives a restart), meter event sessions, queued
rejections not yet reported, import sets, the connector's seen objects, delivery log and the
options. Not kept: the request log, injected faults and the rate-limit window (test tools).

Every change is written before its HTTP answer leaves (`save_after_change`, and after the
timers' flush and connector passes): the whole state as JSON into a temporary file in the
same directory, flushed to disk, then renamed over the old one, so a crash at any moment
leaves either the previous state or the new one, never half of one. Writing the whole state
costs O(state) per change: fine for `make run` and tests, not meant for millions of events.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, cast

from flask import Flask, Response, request

from sandbox.runtime import Sandbox, current_sandbox
from sandbox.state import PendingError, SandboxOptions, SandboxState, StoredFile

FORMAT_VERSION = 1
DEFAULT_STATE_FILE = ".meterfix/sandbox-state.json"
STATE_FILE_ENV = "MFX_SANDBOX_STATE_FILE"
JSON_STORES = (
    "meters",
    "customers",
    "events",
    "meter_events",
    "duplicates",
    "identifiers",
    "sessions",
    "import_sets",
    "connector_seen",
    "deliveries",
)
EXTRA_OPTIONS = ("connector_data_errors",)  # set as attributes on SandboxOptions by modules


class StateFileError(RuntimeError):
    """The state file (or one of its file contents) cannot be read; the message says which."""


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.contents_dir = path.with_name(path.name + ".files")
        self._write_lock = threading.Lock()
        self._written: set[str] = set()
        self._count_lock = threading.Lock()
        self._changes = 0  # save() calls so far, each after a finished change
        self._saved = 0  # changes covered by the file on disk

    def load(self) -> SandboxState:
        """The saved state, or a fresh one when the file does not exist yet."""
        if not self.path.exists():
            return SandboxState()
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {saved.get('version')!r}")
            state = _state_from(saved, self._read_contents)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise StateFileError(
                f"sandbox state file {self.path} is unreadable ({reason})"
            ) from exc
        self._written = set(state.files)
        return state

    def save(self, state: SandboxState) -> None:
        """Write the whole state atomically, after a change. One writer at a time; a caller
        whose change a newer snapshot already covers returns at once (concurrent requests
        share one write)."""
        with self._count_lock:
            self._changes += 1
            mine = self._changes
        with self._write_lock:
            if self._saved >= mine:
                return
            with self._count_lock:
                covered = self._changes  # every one of these finished before the snapshot
            with state.lock:  # serialised under the lock: the stores are live objects
                text = json.dumps(_snapshot(state), separators=(",", ":"))
                files = dict(state.files)
            self.contents_dir.mkdir(parents=True, exist_ok=True)
            for file_id in files.keys() - self._written:
                _write_atomically(self.contents_dir / file_id, files[file_id].content)
                self._written.add(file_id)
            _write_atomically(self.path, text.encode())
            for file_id in self._written - files.keys():  # forgotten by a reset
                (self.contents_dir / file_id).unlink(missing_ok=True)
            self._written &= files.keys()
            self._saved = covered

    def _read_contents(self, file_id: str) -> bytes:
        return (self.contents_dir / file_id).read_bytes()


def keep_state_in(app: Flask, path: Path) -> StateFile:
    """Load the sandbox app's state from `path` and save it after every change."""
    sandbox = cast(Sandbox, app.extensions["sandbox"])
    state_file = StateFile(path)
    sandbox.state = state_file.load()
    sandbox.state_file = state_file
    app.after_request(save_after_change)
    return state_file


def save_after_change(response: Response) -> Response:
    """Flask after-request hook: anything but a read may have changed the state."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        current_sandbox().persist()
    return response


def _snapshot(state: SandboxState) -> dict[str, Any]:
    options = asdict(state.options)
    for name in EXTRA_OPTIONS:
        if hasattr(state.options, name):
            options[name] = str(getattr(state.options, name))
    return {
        "version": FORMAT_VERSION,
        "options": options,
        "files": {file_id: stored.obj for file_id, stored in state.files.items()},
        "pending_errors": [asdict(item) for item in state.pending_errors],
        **{name: getattr(state, name) for name in JSON_STORES},
    }


def _state_from(saved: dict[str, Any], read_contents: Any) -> SandboxState:
    known = {f.name for f in fields(SandboxOptions)}
    options = SandboxOptions(**{k: v for k, v in saved["options"].items() if k in known})
    for name in EXTRA_OPTIONS:
        if name in saved["options"]:
            setattr(options, name, saved["options"][name])
    state = SandboxState(options=options)
    for name in JSON_STORES:
        setattr(state, name, type(getattr(state, name))(saved.get(name) or ()))
    state.pending_errors = [PendingError(**item) for item in saved["pending_errors"]]
    state.files = {
        file_id: StoredFile(obj=obj, content=read_contents(file_id))
        for file_id, obj in saved["files"].items()
    }
    return state


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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
