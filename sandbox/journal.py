"""The state file's journal: one JSON line per saved change, appended in one write and flushed
to disk before the change's answer leaves (`sandbox.persistence.StateFile`).

A line holds what changed in the journaled stores (lists only ever appended to or replaced
whole, TrackedDicts that remember the keys set) and, when any of them changed, the small stores
whole. A crash while a line is written leaves a line without its newline at the end of the
file: it was never answered for, and is dropped on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sandbox.state import SandboxState
from sandbox.tracked import TrackedDict

JOURNALED_LISTS = ("meter_events", "duplicates", "deliveries", "pending_errors")
JOURNALED_DICTS = ("events", "identifiers", "sessions", "connector_seen")
Changes = dict[str, dict[str, Any]]  # "replace" / "append" / "set" → store name → values


class JournalError(ValueError):
    """A journal line other than a torn last one cannot be read."""


class Journal:
    """An append-only file of JSON lines, each written whole and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.size = 0  # bytes in the file, once opened

    def append(self, line: bytes) -> None:
        """Write one line (ending in a newline) in one write, then fsync it. A failed write is
        cut off again, so the next line never follows half of one."""
        fd = self._open()
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, self.size)
            raise
        self.size += len(line)

    def clear(self) -> None:
        """Empty the journal (its lines are in the state file now)."""
        if self._fd is None and not self.path.exists():
            return
        fd = self._open()
        os.ftruncate(fd, 0)
        os.fsync(fd)
        self.size = 0

    def read(self) -> list[dict[str, Any]]:
        """Every whole line, in order; a last line without its newline (torn) is dropped."""
        if not self.path.exists():
            return []
        *whole, _torn = self.path.read_bytes().split(b"\n")
        records = []
        for number, line in enumerate(whole, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
                    raise ValueError("not a journal record")
            except ValueError as exc:
                raise JournalError(f"{self.path} line {number} is unreadable ({exc})") from exc
            records.append(record)
        return records

    def _open(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.size = os.fstat(self._fd).st_size
            if created:
                fsync_directory(self.path.parent)
        return self._fd


class ChangeTracker:
    """What of the journaled stores the files on disk already hold: each list and its length,
    each TrackedDict (which remembers the keys set since). Call under the state's lock."""

    def __init__(self) -> None:
        self._lists: dict[str, tuple[list[Any], int]] = {}
        self._dicts: dict[str, TrackedDict[Any, Any]] = {}

    def baseline(self, state: SandboxState) -> dict[str, Any]:
        """Everything is on disk as of now; returns shallow copies of the journaled stores."""
        copies: dict[str, Any] = {}
        for name in JOURNALED_LISTS:
            items = getattr(state, name)
            self._lists[name] = (items, len(items))
            copies[name] = list(items)
        for name in JOURNALED_DICTS:
            tracked = _tracked(state, name)
            tracked.track()
            self._dicts[name] = tracked
            copies[name] = dict(tracked)
        return copies

    def take(self, state: SandboxState) -> Changes:
        """The changes since the last `take` or `baseline` (their values shared, not copied:
        journaled entries are never changed once stored, only replaced)."""
        changes: Changes = {"replace": {}, "append": {}, "set": {}}
        for name in JOURNALED_LISTS:
            items, known = getattr(state, name), self._lists[name]
            if items is not known[0] or len(items) < known[1]:  # drained or replaced
                changes["replace"][name] = list(items)
            elif len(items) > known[1]:
                changes["append"][name] = items[known[1] :]
            self._lists[name] = (items, len(items))
        for name in JOURNALED_DICTS:
            tracked = _tracked(state, name)
            if tracked is not self._dicts[name] or tracked.rewritten:
                changes["replace"][name] = dict(tracked)
                tracked.track()
                self._dicts[name] = tracked
            elif keys := tracked.take_changes():
                changes["set"][name] = {key: tracked[key] for key in keys}
        return {kind: stores for kind, stores in changes.items() if stores}


def _tracked(state: SandboxState, name: str) -> TrackedDict[Any, Any]:
    """The store as a TrackedDict (a plain dict put in its place is taken over as one)."""
    store = getattr(state, name)
    if not isinstance(store, TrackedDict):
        store = TrackedDict(store)
        setattr(state, name, store)
    return store


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
