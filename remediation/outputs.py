"""Output planning: deterministic names, splits at 1,000,000 records / 1 GB, lineage metadata.

Files are written under a temporary name and renamed when the run finishes, so a failed run
leaves no half-written output. A file is only created when a record goes to it (never empty).
"""

from __future__ import annotations

import hashlib
import os
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from remediation.filetypes import FileFormat
from remediation.lineage import IDENTIFIERS_KEY, KEPT
from remediation.records import UsageRecord
from remediation.spool import open_spooled
from remediation.writers import RecordWriter

MAX_ROWS = 1_000_000
MAX_BYTES = 1_000_000_000
MAX_NAME = 254
SIZE_CHECK_EVERY = 1024
UTF8_MOST = 4  # bytes a character takes in UTF-8 at most
HEAD_MOST = 1 << 20  # bytes a CSV output header takes at most (64 KiB of names, 4 bytes each)


@dataclass(frozen=True, slots=True)
class PlannedOutput:
    kind: str  # corrected | quarantine
    path: Path
    rows: int
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)


def source_stem(source: str) -> str:
    """`s3://b/usage/2026-11.corrected.r1.csv` -> `2026-11` (our own suffixes dropped)."""
    name = source.replace("\\", "/").rsplit("/", 1)[-1] or "usage"
    stem = re.sub(r"\.(csv|json|jsonl|ndjson|txt|tsv)$", "", name, flags=re.I)
    stem = re.sub(r"(\.(corrected|quarantine|layout\d+|part\d{4}|r\d+))+$", "", stem)
    return stem or "usage"


def output_name(
    stem: str, kind: str, generation: int, fmt: FileFormat, layout: int = 1, part: int | None = None
) -> str:
    suffix = f".{kind}.r{generation}"
    suffix += f".layout{layout}" if layout > 1 else ""
    suffix += f".part{part:04d}" if part is not None else ""
    suffix += f".{fmt.value}"
    # in UTF-8 bytes, as filesystems count (255): 100 CJK characters are 300 bytes
    if len(_utf8(stem)) + len(suffix) > MAX_NAME:
        digest = hashlib.sha256(_utf8(stem)).hexdigest()[:10]
        stem = bytes_prefix(stem, MAX_NAME - len(suffix) - 11) + "-" + digest
    return stem + suffix


def is_output_name(name: str, source: str, generation: int) -> bool:
    """Whether `name` is one a run of `source` at `generation` writes (corrected or
    quarantine files of any layout, part and format, or its audit file)."""
    if name == audit_name(source, generation):
        return True
    stem = re.escape(source_stem(source))
    kinds = rf"\.(corrected|quarantine)\.r{generation}(\.layout\d+)?(\.part\d{{4}})?"
    formats = "|".join(f.value for f in FileFormat)
    return re.fullmatch(rf"{stem}{kinds}\.({formats})", name) is not None


def audit_name(source: str, generation: int) -> str:
    """The audit file of `source`'s run: 200 bytes of the stem (a filesystem counts a name's
    bytes: CJK are 3 each)."""
    return f"{bytes_prefix(source_stem(source), 200)}.r{generation}.audit.jsonl"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def bytes_prefix(text: str, limit: int) -> str:
    """The longest start of `text` of at most `limit` UTF-8 bytes (no character cut)."""
    return _utf8(text)[:limit].decode("utf-8", "ignore")


def lineage(
    source: str, generation: int, kind: str, rows: int, sha256: str, kept: bool = False
) -> dict[str, str]:
    """S3 user metadata (ASCII only, so the source is percent-encoded). `kept`: the rows
    carry the identifiers they came with (`--identifiers keep`), none derived
    (`remediation.lineage.object_lineage` reads it back)."""
    meta = {
        "mfx-source": quote(source, safe="/:._-"),
        "mfx-generation": str(generation),
        "mfx-sha256": sha256,
        "mfx-rows": str(rows),
        "mfx-kind": kind,
    }
    if kept:
        meta[IDENTIFIERS_KEY] = KEPT
    return meta


def _rows_fitting(ends: Sequence[int], done: int, most: int, room: int, extra: int) -> int:
    """How many of the `most` rows from row `done` fit in `room` bytes (each row's bytes
    from `ends`, plus `extra`)."""
    if room <= 0:
        return 0
    start = ends[done] + extra * done
    return (
        bisect_right(range(done, done + most + 1), start + room, key=lambda i: ends[i] + extra * i)
        - 1
    )


class _Part:
    def __init__(
        self,
        path: Path,
        fmt: FileFormat,
        columns: Sequence[str] | None,
        annotations: Sequence[str],
    ) -> None:
        self.path = path
        self.file: BinaryIO
        self.file, self.digest = open_spooled(path)
        self.writer = RecordWriter(self.file, fmt, columns=columns, annotations=annotations)
        self.rows = 0
        self.full = False
        # bytes at the last exact look (`writer.size()`), characters written since, and the
        # most characters one record took: what bounds the part's bytes between looks
        self.known, self.unchecked, self.largest = 0, 0, 0

    def close(self) -> None:
        if not self.file.closed:
            self.writer.close()
            self.file.close()


class OutputSet:
    """All files of one kind for one input: CSV layouts x size-limited parts."""

    def __init__(
        self,
        out_dir: Path,
        source: str,
        kind: str,
        fmt: FileFormat,
        generation: int,
        *,
        columns: Sequence[str] | None = None,
        annotations: Sequence[str] = (),
        max_rows: int = MAX_ROWS,
        max_bytes: int = MAX_BYTES,
        kept: bool = False,
    ) -> None:
        self.out_dir, self.source, self.kind, self.fmt = out_dir, source, kind, fmt
        self.kept = kept  # identifiers kept as they came (`lineage`)
        self.generation, self.columns, self.annotations = generation, columns, annotations
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.stem = source_stem(source)
        self.layouts: list[list[_Part]] = []
        self.rows = 0

    def write(self, record: UsageRecord, notes: Mapping[str, object] | None = None) -> None:
        part = self._part_for(record)
        written = part.writer.write(record, notes)
        self.rows += 1
        part.rows += 1
        part.unchecked += written
        part.largest = max(part.largest, written)
        self._check_full(part)

    def write_block(self, data: bytes | memoryview, ends: Sequence[int]) -> None:
        """Encoded rows (CSV in the first layout's columns, or JSON Lines; row i ends at byte
        `ends[i + 1]`, `ends[0]` is 0); parts split as `write` splits them, and never past
        `max_bytes` (the rows' bytes are known: a part took 1,024 rows between looks at its
        size, and rows growing from 100 bytes to 1 MB made a part of 1.07 GB)."""
        if not self.layouts:
            self.layouts.append([self._open(1, 1, self.columns)])
        view, done, rows = memoryview(data), 0, len(ends) - 1
        # a JSON array's writer adds `,\n` before each element and `\n]\n` at the end
        extra = 2 if self.fmt is FileFormat.JSON else 0
        while done < rows:
            part = self._current(self.layouts[0])
            room = SIZE_CHECK_EVERY - part.rows % SIZE_CHECK_EVERY
            take = min(room, self.max_rows - part.rows, rows - done)
            size = part.writer.size()
            # a new part's CSV header is written with its first rows (at most HEAD_MOST)
            reserve = 3 * extra + (HEAD_MOST if not part.rows else 0)
            fit = _rows_fitting(ends, done, take, self.max_bytes - size - reserve, extra)
            if fit == 0 and part.rows:  # the next row would pass the limit: a new part
                part.full = True
                continue
            take = max(fit, 1)  # a row longer than the limit on its own still goes somewhere
            part.writer.write_bytes(view[ends[done] : ends[done + take]], take)
            part.known = size + ends[done + take] - ends[done] + extra * take
            part.unchecked = 0
            done += take
            self.rows += take
            part.rows += take
            self._check_full(part)

    def _check_full(self, part: _Part) -> None:
        if part.rows >= self.max_rows:
            part.full = True
            return
        # every record's characters bound the bytes written since the last look (4 bytes
        # each at most); looked at every SIZE_CHECK_EVERY rows, or once the bound, with room
        # for a record as long as the longest so far, nears the limit
        bound = part.known + UTF8_MOST * (part.unchecked + part.largest)
        if part.rows % SIZE_CHECK_EVERY and bound < self.max_bytes:
            return
        if self._near_limit(part):
            part.full = True  # the next record opens a new part

    def _near_limit(self, part: _Part) -> bool:
        size = part.writer.size()
        part.known, part.unchecked = size, 0
        per_row = size / part.rows
        ahead = max(2 * SIZE_CHECK_EVERY * per_row, UTF8_MOST * part.largest)
        return size + ahead > self.max_bytes

    def _part_for(self, record: UsageRecord) -> _Part:
        for layout in self.layouts:
            if layout[-1].writer.fits(record):
                return self._current(layout)
        columns = self.columns if not self.layouts else None
        layout = [self._open(len(self.layouts) + 1, 1, columns)]
        if not layout[0].writer.fits(record):
            layout[0].close()
            os.unlink(layout[0].path)
            layout = [self._open(len(self.layouts) + 1, 1, None)]
        self.layouts.append(layout)
        return layout[0]

    def _current(self, layout: list[_Part]) -> _Part:
        last = layout[-1]
        if not last.full:
            return last
        layout.append(
            self._open(self.layouts.index(layout) + 1, len(layout) + 1, last.writer.columns)
        )
        return layout[-1]

    def _open(self, layout: int, part: int, columns: Sequence[str] | None) -> _Part:
        tmp = self.out_dir / f".{bytes_prefix(self.stem, 180)}.{self.kind}.{layout}.{part}.tmp"
        return _Part(tmp, self.fmt, columns, self.annotations)

    def close(self) -> None:
        """Write out and close every part, renaming none (`finish` renames them)."""
        for layout in self.layouts:
            for part in layout:
                part.close()

    def finish(self) -> list[PlannedOutput]:
        outputs = []
        for number, layout in enumerate(self.layouts, 1):
            for index, part in enumerate(layout, 1):
                part.close()
                name = output_name(
                    self.stem,
                    self.kind,
                    self.generation,
                    self.fmt,
                    number,
                    index if len(layout) > 1 else None,
                )
                final = self.out_dir / name
                os.replace(part.path, final)
                digest = part.digest.hexdigest()
                meta = lineage(
                    self.source, self.generation, self.kind, part.rows, digest, self.kept
                )
                outputs.append(PlannedOutput(self.kind, final.resolve(), part.rows, digest, meta))
        return outputs

    def abort(self) -> None:
        for layout in self.layouts:
            for part in layout:
                with suppress(OSError):  # a full disk fails the close too: still removed
                    part.file.close()
                part.path.unlink(missing_ok=True)
