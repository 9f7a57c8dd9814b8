"""Output files written, hashed and their lines counted on a thread of their own.

A run's outputs (the corrected and quarantine files, the audit file) are written as their
bytes are made, a block at a time. Written where they are made, the system calls, the SHA-256
and the line count held the thread that decides the rows; here they run on one thread for
the process (the writes and the hash let go of the GIL), in the order given, while that
thread decides the next batch. What is handed over and not yet written is bounded
(`PENDING_BYTES`): a slow disk makes the writers wait, never the memory grow.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# Bytes handed to the spool's thread and not yet written, past which a writer waits (a few
# batches' outputs: a CSV block of 1.875 MB makes ~2 MB of rows and ~3.8 MB of audit lines;
# 4 MB instead changed neither the time nor the peak RSS of 1M-row runs).
PENDING_BYTES = 16 << 20
# Lines counted in slices of this many bytes (a bounded temporary mask).
_COUNT_SLICE = 1 << 20


class _Spool:
    """The process's file-writing thread and the budget of bytes waiting for it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ready = threading.Condition()
        self._pending = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0  # the process that made the thread (a forked child makes its own)

    def submit(self, job: Any, data: memoryview) -> Future[None]:
        size = len(data)
        with self._ready:  # a block larger than the budget goes alone
            self._ready.wait_for(lambda: self._pending + size <= self.limit or not self._pending)
            self._pending += size
            if self._pool is None or self._pid != os.getpid():
                self._pool, self._pid = ThreadPoolExecutor(1, "meterfix-files"), os.getpid()
            return self._pool.submit(self._run, job, data)

    def _run(self, job: Any, data: memoryview) -> None:
        try:
            job(data)
        finally:
            with self._ready:
                self._pending -= len(data)
                self._ready.notify_all()


_SPOOL = _Spool(PENDING_BYTES)


class SpooledFile(io.RawIOBase):
    """A file written from the start on the spool's thread, its SHA-256 (`hashed`) and its
    lines (`count_lines`) taken as its bytes go out: what was written is not read again. An
    error writing it is raised by the next write, or by `close`. Opened buffered by
    `open_spooled`; blocks made elsewhere go straight in (`write_shared`)."""

    def __init__(self, path: Path, count_lines: bool = False, hashed: bool = True) -> None:
        super().__init__()
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        self._sha256 = hashlib.sha256() if hashed else None
        self._count_lines = count_lines
        self.lines = 0  # when counted, once closed
        self._size = 0
        self._last: Future[None] | None = None
        self._error: BaseException | None = None
        self._reported = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        """Bytes a buffer hands over: copied, since it fills its memory again."""
        view = memoryview(data).cast("B")
        self.write_shared(bytes(view))
        return len(view)

    def write_shared(self, data: Any) -> None:
        """Bytes that stay as they are for as long as they are held (an Arrow buffer, bytes):
        written without a copy."""
        self._raise_error()
        view = memoryview(data).cast("B")
        if len(view):
            self._size += len(view)
            self._last = _SPOOL.submit(self._write_out, view)

    def _write_out(self, view: memoryview) -> None:  # on the spool's thread, in order
        if self._error is not None:
            return
        try:
            done = 0
            while done < len(view):
                done += self._file.write(view[done:]) or 0
            if self._sha256 is not None:
                self._sha256.update(view)  # lets go of the GIL for more than 2 KB
            if self._count_lines:
                data = np.frombuffer(view, np.uint8)
                for start in range(0, len(data), _COUNT_SLICE):
                    self.lines += int(np.count_nonzero(data[start : start + _COUNT_SLICE] == 10))
        except BaseException as error:  # raised on the writer's thread, next write or close
            self._error = error

    def _raise_error(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise self._error

    def tell(self) -> int:
        """Bytes handed over so far: the file's size once they are written."""
        return self._size

    def wait(self) -> None:
        """Until every byte handed over is written (or failed to be)."""
        if self._last is not None:
            self._last.result()

    def close(self) -> None:
        """Once every byte handed over is written (an error writing them raised here, unless a
        write raised it already)."""
        if self.closed:
            return
        try:
            self.wait()
            self._file.close()
        finally:
            super().close()
        self._raise_error()

    def hexdigest(self) -> str:
        """The SHA-256 of every byte written (all of them, once the file is closed)."""
        assert self._sha256 is not None, "a file opened with hashed=False"
        return self._sha256.hexdigest()


# A buffer of this size in front of a spooled file: each of its flushes is one hand-over.
BUFFER_BYTES = 256 << 10


def open_spooled(
    path: Path, count_lines: bool = False, hashed: bool = True
) -> tuple[io.BufferedWriter, SpooledFile]:
    """`path` opened to write bytes (buffered, as `open(path, "wb")` is), and its spool."""
    raw = SpooledFile(path, count_lines, hashed)
    return io.BufferedWriter(raw, BUFFER_BYTES), raw


def write_shared(stream: BinaryIO, data: Any) -> None:
    """Bytes that stay as they are (`SpooledFile.write_shared`) written to `stream`: past its
    buffer without a copy when it is a spooled file's, else as `stream.write`."""
    raw = getattr(stream, "raw", None)
    if isinstance(raw, SpooledFile):
        stream.flush()
        raw.write_shared(data)
    else:
        stream.write(data)
