"""Temporary directories a killed worker left behind (a download, a run's outputs: tens of
MB each for 200,000 rows), swept when a worker starts: `TemporaryDirectory` removes its own
only when the process lives to leave the `with`."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from service.logs import log_event
from service.worker.item_deadline import MAX_GRANTED_SECONDS

# The prefixes of the directories the jobs make (`service/jobs`: `tempfile.TemporaryDirectory`)
PREFIXES = ("meterfix-dl-", "meterfix-run-", "meterfix-obj-", "meterfix-rerun-")


def sweep_leftovers(untouched_for: float, root: Path | None = None) -> int:
    """Remove the jobs' temporary directories under `root` (the temp dir) in which nothing
    changed for `untouched_for` seconds and `MAX_GRANTED_SECONDS` more: no live item's (an
    item runs at most its time limit and what its transfers are granted, and this is past
    it: a large file's download dir was swept while its item still read it); how many were
    removed."""
    root = Path(tempfile.gettempdir()) if root is None else root
    oldest = time.time() - untouched_for - MAX_GRANTED_SECONDS
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(PREFIXES) and _untouched_since(entry, oldest):
            shutil.rmtree(entry, ignore_errors=True)
            removed += not entry.exists()
    if removed:
        log_event("worker.leftovers_removed", directories=removed, root=str(root))
    return removed


def _untouched_since(path: Path, oldest: float) -> bool:
    """Whether `path` is a directory (not a link) whose own and whose entries' times are all
    before `oldest`."""
    try:
        if path.is_symlink() or not path.is_dir():
            return False
        times = [path.stat().st_mtime, *(child.lstat().st_mtime for child in path.iterdir())]
    except OSError:  # gone meanwhile, or not ours to read
        return False
    return max(times) < oldest
