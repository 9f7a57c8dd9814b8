"""Decided batches held back until the end of a run (`HeldBack`), on disk: an input that is
not rejected-only writes its batches from its first row going out on only once every batch
was decided (`sameids`: a valid row of a later batch may share the identifier of a row going
out), with the memory of one batch at a time.
"""

from __future__ import annotations

import io
import pickle
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

from remediation.core.decided import Decided

_LENGTH = struct.Struct("<Q")


class HeldBack:
    """Decided batches pickled to an unnamed temporary file, given back in order. Their Arrow
    buffers are written out of band, as they are (pickled in band, each was first copied to
    bytes, and a column sliced from a CSV block took its whole block along: 200,000 rows of a
    usage file peaked 34 MB higher)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.file: io.BufferedRandom | None = None
        self.count = 0

    def put(self, decided: Decided) -> None:
        try:
            self._put(decided)
        except OSError as exc:
            raise self._said(exc) from exc

    def _said(self, exc: OSError) -> OSError:
        """`exc` (no room: `File too large`, `No space left on device`) said of this file,
        unnamed: it named the input (`meterfix validate`) or the outputs' folder."""
        where = self.directory if self.directory is not None else tempfile.gettempdir()
        what = f"the rows held back until every row is decided (a temporary file in {where})"
        return OSError(exc.errno, exc.strerror, what)

    def _put(self, decided: Decided) -> None:
        if self.file is None:
            # unnamed: gone with the process whatever becomes of the run; closed by `close`
            self.file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(decided, pickle.HIGHEST_PROTOCOL, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        self.file.write(_LENGTH.pack(len(views)))
        for part in [memoryview(data), *views]:
            self.file.write(_LENGTH.pack(part.nbytes))
            self.file.write(part)
        self.count += 1

    def batches(self) -> Iterator[Decided]:
        """The batches held, in the order they were put, each read as it is asked for."""
        if self.file is None:
            return
        try:
            self.file.flush()
        except OSError as exc:
            raise self._said(exc) from exc
        self.file.seek(0)
        for _ in range(self.count):
            (count,) = _LENGTH.unpack(self.file.read(_LENGTH.size))
            data, *buffers = [self._part() for _ in range(count + 1)]
            yield pickle.loads(data, buffers=buffers)  # our own file, written by `put`

    def _part(self) -> bytearray:
        assert self.file is not None
        (size,) = _LENGTH.unpack(self.file.read(_LENGTH.size))
        part = bytearray(size)  # writable: the rows held back are quarantined in place
        if self.file.readinto(part) != size:
            raise EOFError("a batch held back was cut short")
        return part

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
