"""Rows going out that share their identifier with a row counted valid, in an input that is
not rejected-only (`SameIdentifiers`).

Such an input may hold rows Stripe billed: its valid rows are written nowhere (`decide`).
Stripe dedupes by identifier, so of two rows under one identifier it took one event; when one
of them is valid, it billed that identifier. Corrected (or re-sent as it came: reported, valid
now) under `<id>-mfx1`, the other would be billed a second time: it is quarantined instead,
under `identifier_taken` (`codes.NEVER_RESENT`: never corrected, never sent by a re-run, as
`decide._maybe_billed` holds a row), wherever the valid row is. A valid row in an earlier
batch or the same is known when the row is decided; one in a later batch only at the end, so
the engine holds the decided batches back from the first row going out on (`heldback`), and
`amend` quarantines those rows then. Identifiers are held as 64-bit digests: a collision can
only quarantine a row, never send one. Rows without an identifier never clash (Stripe makes
one up for each). The rows of the input a run does not take (an error report's run: those
Stripe took, not reported) count as valid (`taken`).

A rejected-only input (a failed-records file) has no valid row, but its object may hold rows
Stripe took (not refused): `TakenElsewhere`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from remediation.codes import ErrorCode
from remediation.core.column import Mask
from remediation.core.columns import Batch, Indexes
from remediation.core.decided import CORRECTED, QUARANTINED, VALID, VALID_KEPT, Decided
from remediation.core.rules import Changes
from remediation.core.textmeasures import mask
from remediation.limits import shown
from remediation.rowdigest import text_digests

Digests = npt.NDArray[np.uint64]
CHUNK_ROWS = 1024


class DigestSet:
    """64-bit digests as sorted arrays of decreasing sizes (each added batch merged into the
    smaller ones, so a digest is merged about log2(n) times, and a look-up searches as many):
    8 bytes a row, 32 MB for 4M rows."""

    def __init__(self) -> None:
        self.levels: list[Digests] = []

    def __bool__(self) -> bool:
        return bool(self.levels)

    def add(self, digests: Digests) -> None:
        if not len(digests):
            return
        new: Digests = np.sort(digests)
        while self.levels and len(self.levels[-1]) <= len(new):
            new = np.concatenate([self.levels.pop(), new])  # repeats kept: no copy to drop them
            new.sort()
        self.levels.append(new)

    def holds(self, digests: Digests) -> Mask:
        found: Mask = np.zeros(len(digests), bool)
        for level in self.levels:
            at = np.minimum(np.searchsorted(level, digests), len(level) - 1)
            found |= level[at] == digests
        return found


class SameIdentifiers:
    """What a run of an input that is not rejected-only knows of its identifiers so far: those
    of the rows counted valid (kept), of the rows that go out (corrected, or re-sent as they
    came: reported, valid now), and of the rows going out that a valid row of a later batch
    shares (`late`, with that row's number, for the reason)."""

    def __init__(self) -> None:
        self.valid = DigestSet()
        self.out = DigestSet()
        self._late: list[tuple[Digests, Indexes]] = []
        self._late_found: tuple[Digests, Indexes] | None = None
        self._taken: list[tuple[Digests, Indexes]] = []

    def taken(self, batch: Batch, at: Indexes) -> None:
        """Rows `at` of `batch` the run does not take, which Stripe took (an error report's
        run: the rows of the usage file the report is not about, `ports.SelectsRows`): counted
        valid with the next batch decided, or at the end."""
        at = at[_named(batch)[at]]
        if len(at):
            self._taken.append((_digests(batch, at), batch.rows[at]))

    def hold(self, decided: Decided) -> None:
        """Quarantine the rows of `decided` going out whose identifier a valid row of this
        batch or of an earlier one has; note the valid rows that share one with a row going
        out of an earlier batch (`late`)."""
        batch, fate = decided.batch, decided.fate
        named = _named(batch)
        kept = np.flatnonzero(named & (fate == VALID_KEPT))
        out = np.flatnonzero(named & ((fate == CORRECTED) | (fate == VALID)))
        taken, taken_rows = self._taken_so_far()
        if not len(kept) and not len(out) and not len(taken):
            return
        digests = _digests(batch)
        valid_here, out_here = np.concatenate([digests[kept], taken]), digests[out]
        valid_rows = np.concatenate([batch.rows[kept], taken_rows])
        before = self.valid.holds(out_here)
        clash = before | np.isin(out_here, valid_here)
        if clash.any():
            rows = out[clash]
            first = _first_rows(valid_here, valid_rows)
            beside = _beside(first, out_here[clash], before[clash], batch.rows[rows])
            quarantine(decided, rows, beside)
        later = self.out.holds(valid_here)
        if later.any():
            self._late.append((valid_here[later], valid_rows[later]))
        self.valid.add(valid_here)
        self.out.add(out_here[~clash])

    def amend(self, decided: Decided) -> None:
        """Quarantine the rows of `decided` going out whose identifier a valid row of a later
        batch has (known once every batch was decided)."""
        late, valid_rows = self._late_rows()
        if not len(late):
            return
        fate = decided.fate
        out = np.flatnonzero(_named(decided.batch) & ((fate == CORRECTED) | (fate == VALID)))
        digests = _digests(decided.batch)[out]
        at = np.minimum(np.searchsorted(late, digests), len(late) - 1)
        clash = late[at] == digests
        if clash.any():
            quarantine(decided, out[clash], [int(row) for row in valid_rows[at[clash]]])

    def _late_rows(self) -> tuple[Digests, Indexes]:
        """The digests of `late`, sorted, each with the first valid row that has it."""
        if self._late_found is None:
            taken, taken_rows = self._taken_so_far()  # those after the last batch decided
            later = self.out.holds(taken)
            self._late.append((taken[later], taken_rows[later]))
            digests = np.concatenate([d for d, _ in self._late] or [np.zeros(0, np.uint64)])
            rows = np.concatenate([r for _, r in self._late] or [np.zeros(0, np.int64)])
            order = np.lexsort((rows, digests))
            digests, rows = digests[order], rows[order]
            first = np.ones(len(digests), bool)
            first[1:] = digests[1:] != digests[:-1]
            self._late_found = (digests[first], rows[first])
            self._late.clear()
        return self._late_found

    def _taken_so_far(self) -> tuple[Digests, Indexes]:
        """The digests and row numbers of the rows `taken` since last asked."""
        digests = np.concatenate([d for d, _ in self._taken] or [np.zeros(0, np.uint64)])
        rows = np.concatenate([r for _, r in self._taken] or [np.zeros(0, np.int64)])
        self._taken.clear()
        return digests, rows


class TakenElsewhere:
    """The identifiers (64-bit digests, sorted) Stripe took an event under from rows outside a
    rejected-only run's input: a failed-records file's object holds a row under one that
    Stripe did not refuse (more rows of the object hold it than of the file). A row of the run
    going out under one is quarantined (`identifier_taken`): corrected to `<id>-mfx1`, it was
    billed a second time. Handed to the engine with the rows left out (`ports.LeavesOut`,
    leaving none out); `source` names the object in the reason."""

    def __init__(self, digests: Digests, source: str) -> None:
        self.digests: Digests = np.unique(digests)
        self.source = source

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
            whose = f"a row of {shown(self.source)} that Stripe took (not refused)"
            quarantine_taken(decided, rows, [whose] * len(rows))


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


def _first_rows(digests: Digests, rows: Indexes) -> dict[int, int]:
    """Each digest's first row number."""
    first: dict[int, int] = {}
    for digest, row in zip(digests.tolist(), rows.tolist(), strict=True):
        first[digest] = min(row, first.get(digest, row))
    return first


def _beside(
    first: dict[int, int], digests: Digests, earlier: Mask, rows: Indexes
) -> list[int | None]:
    """The valid row each of `rows` is quarantined beside: None when one is before it (in an
    earlier batch, `earlier`, or in this one), else the first after it."""
    found = [first.get(digest) for digest in digests.tolist()]
    return [
        None if before or valid is None or valid < row else valid
        for valid, before, row in zip(found, earlier.tolist(), rows.tolist(), strict=True)
    ]


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
