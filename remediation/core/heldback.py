"""Decided batches held back until the end of a run (`HeldBack`), on disk: an input that is
not rejected-only writes its batches from its first row corrected on only once every batch
was decided (`sameids`: a valid row of a later batch may share a corrected row's identifier),
with the memory of one batch at a time.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from remediation.core.decided import Decided


class HeldBack:
    """Decided batches pickled to an unnamed temporary file, given back in order."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.file: IO[bytes] | None = None
        self.count = 0

    def put(self, decided: Decided) -> None:
        if self.file is None:
            # unnamed: gone with the process whatever becomes of the run; closed by `close`
            self.file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115
        pickle.dump(decided, self.file, pickle.HIGHEST_PROTOCOL)
        self.count += 1

    def batches(self) -> Iterator[Decided]:
        """The batches held, in the order they were put, each read as it is asked for."""
        if self.file is None:
            return
        self.file.flush()
        self.file.seek(0)
        for _ in range(self.count):
            yield pickle.load(self.file)  # our own file, written by `put`

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
