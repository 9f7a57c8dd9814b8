"""Rows going out that share their identifier with a row counted valid, in an input that is
not rejected-only (`SameIdentifiers`).

Such an input may hold rows Stripe billed: its valid rows are written nowhere (`decide`).
Stripe dedupes by identifier, so of two rows under one identifier it took one event; when one
of them is valid, it billed that identifier. Corrected (or re-sent as it came: reported, valid
now) under `<id>-mfx1`, the other would be billed a second time: it is quarantined instead,
under `identifier_taken` (`codes.NEVER_RESENT`: never corrected, never sent by a re-run, as
`decide._maybe_billed` holds a row), wherever the valid row is. A valid row in a later batch
is known only at the end, so the engine holds the decided batches back from the first row
going out on (`heldback`), and `amend` quarantines those rows then (all of them: a valid row
before one is found the same way). Identifiers are held as 64-bit digests: a collision can
only quarantine a row, never send one. Rows without an identifier never clash (Stripe makes
one up for each). The rows of the input a run does not take (an error report's run: those
Stripe took, not reported) count as valid (`taken`).

A rejected-only input (a failed-records file) has no valid row, but its object may hold rows
Stripe took (not refused): `TakenElsewhere`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.core.checks import CODES, OTHER_ID, CodeIds, Codes
from remediation.core.column import Mask
from remediation.core.columns import Batch, Indexes
from remediation.core.decided import CORRECTED, QUARANTINED, VALID, VALID_KEPT, Decided
from remediation.core.rules import Changes
from remediation.core.textmeasures import mask
from remediation.limits import shown
from remediation.outcomes import Tally
from remediation.rowdigest import text_digests

Digests = npt.NDArray[np.uint64]
_KNOWN = np.asarray([code in KNOWN_CODES for code in CODES] + [False], bool)  # by code id
CHUNK_ROWS = 1024


class SameIdentifiers:
    """What a run of an input that is not rejected-only knows of its identifiers: the digests
    of the rows counted valid (kept, or `taken`), each with its row number, appended as they
    come (16 bytes a row, past `SPILL_ROWS` on disk: `_Spill`), and those of the rows going
    out (corrected, or re-sent as they came: reported, valid now), in memory. Every row going
    out is decided at the end (`amend`): the batches are held back from the first of them on,
    so a valid row before or after it is known alike, its reason the same however the input
    was cut into batches; nothing is sorted unless a row went out."""

    def __init__(self) -> None:
        self._valid = _Spill()
        self._out: list[Digests] = []
        self._found: tuple[Digests, Indexes] | None = None
        # a run that only counts (`recount`): each row going out as it was counted, aligned
        # with `_out` (its fate, the code it arrived with, as id and text, its corrections)
        self.counting = False
        self._counted: list[tuple[npt.NDArray[np.int8], CodeIds, Codes, Indexes]] = []

    @property
    def out(self) -> bool:
        """Whether a row went out (its batch and those after it are held back)."""
        return bool(self._out)

    def taken(self, batch: Batch, at: Indexes) -> None:
        """Rows `at` of `batch` the run does not take, which Stripe took (an error report's
        run: the rows of the usage file the report is not about, `ports.SelectsRows`): counted
        valid."""
        at = at[_named(batch)[at]]
        if len(at):
            self._valid.add(_digests(batch, at), batch.rows[at])

    def hold(self, decided: Decided) -> None:
        """Note the identifiers of the rows of `decided` counted valid and going out."""
        batch, fate = decided.batch, decided.fate
        named = _named(batch)
        kept = np.flatnonzero(named & (fate == VALID_KEPT))
        out = np.flatnonzero(named & ((fate == CORRECTED) | (fate == VALID)))
        if not len(kept) and not len(out):
            return
        digests = _digests(batch)
        if len(kept):
            self._valid.add(digests[kept], batch.rows[kept])
        if len(out):
            self._out.append(digests[out])
            if self.counting:
                counted = (fate[out], decided.arrived_ids[out], decided.arrived[out])
                self._counted.append((*counted, decided.corrections[out]))

    def amend(self, decided: Decided) -> None:
        """Quarantine the rows of `decided` going out whose identifier a valid row has
        (known once every batch was decided), each beside the first such row."""
        found, valid_rows = self._valid_found()
        if not len(found):
            return
        fate = decided.fate
        out = np.flatnonzero(_named(decided.batch) & ((fate == CORRECTED) | (fate == VALID)))
        digests = _digests(decided.batch)[out]
        at = np.minimum(np.searchsorted(found, digests), len(found) - 1)
        clash = found[at] == digests
        if clash.any():
            rows = out[clash]
            first = valid_rows[at[clash]].tolist()
            mine = decided.batch.rows[rows].tolist()
            beside = [None if v < r else v for v, r in zip(first, mine, strict=True)]
            quarantine(decided, rows, beside)

    def recount(self, tally: Tally) -> None:
        """A run that only counts (validation: nothing written, so nothing held back) counted
        its rows going out as they went: those a valid row shares are counted quarantined
        instead, as `amend` quarantines them (the code they arrived with, their corrections
        undone)."""
        if not self._counted:
            return
        digests = np.concatenate(self._out)
        parts = zip(*self._counted, strict=True)
        fate, ids, arrived, corrections = (np.concatenate(x) for x in parts)
        self._counted.clear()
        found, _ = self._valid_found()
        if not len(found):
            return
        at = np.minimum(np.searchsorted(found, digests), len(found) - 1)
        for i in np.flatnonzero(found[at] == digests).tolist():
            code_id = int(ids[i])
            code = (
                None if code_id == 0 else str(CODES[code_id] if code_id < OTHER_ID else arrived[i])
            )
            was = "corrected" if fate[i] == CORRECTED else "valid"
            tally.count(was, code if was == "corrected" else None, -1, -int(corrections[i]), 0)
            if code is not None:  # as `audit.count`: a row that arrived with none is not
                tally.count("quarantined", code, 1, 0, int(not _KNOWN[code_id]))

    def close(self) -> None:
        self._valid.close()

    def _valid_found(self) -> tuple[Digests, Indexes]:
        """The digests of rows going out that a valid row shares, sorted, each with the first
        valid row that has it: the valid rows read back a chunk at a time."""
        if self._found is None:
            out: Digests = np.unique(np.concatenate(self._out or [np.zeros(0, np.uint64)]))
            if not self.counting:
                self._out.clear()
            first = np.full(len(out), _NONE, np.int64)
            if len(out):
                for digests, rows in self._valid.chunks():
                    at = np.minimum(np.searchsorted(out, digests), len(out) - 1)
                    hit = out[at] == digests
                    np.minimum.at(first, at[hit], rows[hit])
            shared = first != _NONE
            self._found = (out[shared], first[shared])
            self._valid.close()
        return self._found


_NONE = np.iinfo(np.int64).max
SPILL_ROWS = 262_144  # 4 MB of digests and row numbers held before they go to disk
_PAIR = np.dtype([("digest", np.uint64), ("row", np.int64)])


class _Spill:
    """(digest, row number) pairs appended, read back in chunks: held in memory up to
    `SPILL_ROWS`, then written to an unnamed temporary file (a usage file of 4M rows held 33
    MB of sorted digests, 61 MB at its merges, re-sorted at each)."""

    def __init__(self) -> None:
        self._held: list[npt.NDArray[np.void]] = []
        self._count = 0
        self._file: io.BufferedRandom | None = None

    def add(self, digests: Digests, rows: Indexes) -> None:
        pairs = np.empty(len(digests), _PAIR)
        pairs["digest"], pairs["row"] = digests, rows
        self._held.append(pairs)
        self._count += len(pairs)
        if self._count >= SPILL_ROWS:
            self._write()

    def chunks(self) -> Iterator[tuple[Digests, Indexes]]:
        if self._file is not None:
            self._write()
            self._file.seek(0)
            while chunk := self._file.read(SPILL_ROWS * _PAIR.itemsize):
                pairs = np.frombuffer(chunk, _PAIR)
                yield pairs["digest"], pairs["row"]
        for pairs in self._held:
            yield pairs["digest"], pairs["row"]

    def close(self) -> None:
        self._held.clear()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _write(self) -> None:
        try:
            if self._file is None:
                # unnamed: gone with the process whatever becomes of the run
                self._file = tempfile.TemporaryFile()  # noqa: SIM115
            for pairs in self._held:
                self._file.write(pairs.tobytes())
            self._file.flush()
        except OSError as exc:  # no room: said of this file
            where = f"a temporary file in {tempfile.gettempdir()}"
            what = f"the identifiers of the valid rows, held until every row is decided ({where})"
            raise OSError(exc.errno, exc.strerror, what) from exc
        self._held.clear()
        self._count = 0


class TakenElsewhere:
    """The identifiers (64-bit digests, sorted) Stripe took an event under from rows outside a
    rejected-only run's input: a failed-records file's object holds a row under one that
    Stripe did not refuse (more rows of the object hold it than of the file). A row of the run
    going out under one is quarantined (`identifier_taken`): corrected to `<id>-mfx1`, it was
    billed a second time. Handed to the engine with the rows left out (`ports.LeavesOut`,
    leaving none out); `source` names the object in the reason (or `whose` is its words: a
    quarantine file fed back to `meterfix remediate`, its rows' `mfx_code` saying so)."""

    def __init__(self, digests: Digests, source: str, whose: str | None = None) -> None:
        self.digests: Digests = np.unique(digests)
        self.whose = whose or f"a row of {shown(source)} that Stripe took (not refused)"

    def excluded(self, identifiers: set[str]) -> set[str]:
        return set()

    def count_left(self, rows: int) -> None:
        pass

    def hold(self, decided: Decided) -> None:
        """Quarantine the rows of `decided` going out under an identifier Stripe took."""
        if not len(self.digests):
            return
        fate = decided.fate
        out = np.flatnonzero(_named(decided.batch) & ((fate == CORRECTED) | (fate == VALID)))
        if not len(out):
            return
        digests = _digests(decided.batch)[out]
        at = np.minimum(np.searchsorted(self.digests, digests), len(self.digests) - 1)
        rows = out[self.digests[at] == digests]
        if len(rows):
            quarantine_taken(decided, rows, [self.whose] * len(rows))


def _digests(batch: Batch, at: Indexes | None = None) -> Digests:
    """Each row's identifier's digest (of the rows `at`: those), `CHUNK_ROWS` rows at a time:
    a digest takes 8 bytes of numpy a byte of text while it is made (a usage file's batch of
    22,000 identifiers at once: its run peaked 29 MB higher)."""
    texts = batch.identifier.text
    if at is not None:
        texts = texts.take(pa.array(at, pa.int64()))
    parts = [
        text_digests(texts.slice(start, CHUNK_ROWS)) for start in range(0, len(texts), CHUNK_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _named(batch: Batch) -> Mask:
    """Rows with an identifier of their own (Stripe makes one up for a row without)."""
    column = batch.identifier
    return column.present() & mask(pc.greater(pc.utf8_length(column.text), 0))


def quarantine(decided: Decided, rows: Indexes, valid_rows: list[int | None]) -> None:
    """Rows of `decided` going out (corrected or re-sent) quarantined instead, each beside the
    valid row that shares its identifier (the first after it when none is before it, by
    number; None when one is before it: an earlier batch's is not kept by number), under
    `identifier_taken`; their corrections undone. So a reason is the same however the input
    was cut into batches."""
    whose = [
        ("an earlier row's" if valid_row is None else f"row {valid_row}'s")
        + ", which is valid and not re-sent"
        for valid_row in valid_rows
    ]
    quarantine_taken(decided, rows, whose)


def quarantine_taken(decided: Decided, rows: Indexes, whose: list[str]) -> None:
    """Rows of `decided` going out quarantined under `identifier_taken`, their identifier
    being also `whose` (one a row), a row Stripe took; their corrections undone."""
    identifiers = decided.batch.identifier.text
    for row, which in zip(rows.tolist(), whose, strict=True):
        what = "not corrected" if decided.fate[row] == CORRECTED else "not sent again"
        decided.reason[row] = (
            f"identifier {shown(identifiers[row].as_py())} is also {which}: Stripe took one "
            "event under it, a second would be billed twice; " + what
        )
    decided.fate[rows] = QUARANTINED
    decided.mfx_code[rows] = ErrorCode.IDENTIFIER_TAKEN
    decided.corrections[rows] = 0
    kept = ~np.isin(decided.corrected, rows)
    decided.fixed = decided.fixed.take(np.flatnonzero(kept))
    decided.corrected = decided.corrected[kept]
    gone: Mask = np.zeros(len(decided.fate), bool)
    gone[rows] = True
    decided.changes = [_without(change, gone) for change in decided.changes]


def _without(change: Changes, gone: Mask) -> Changes:
    """`change` without the entries of the rows `gone`."""
    picked = np.flatnonzero(~gone[change.at])
    if len(picked) == len(change.at):
        return change
    chosen = picked.tolist()
    rule = change.rule if isinstance(change.rule, str) else [change.rule[i] for i in chosen]
    name = change.field if isinstance(change.field, str) else [change.field[i] for i in chosen]
    return Changes(
        change.at[picked], rule, name, change.before.take(picked), change.after.take(picked)
    )
