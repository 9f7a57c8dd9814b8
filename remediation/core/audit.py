"""Audit lines of decided batches, built on columns: one line per correction and quarantine,
in row order (a row's corrections in the order they were made), the bytes `json.dumps(entry,
ensure_ascii=False)` writes (`sinks.Sinks.audit`); the run's counts. (The audit as records for
the service: `auditrecords`; the identifiers written rows go out under: `newids`.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.auditrecords import audit_records
from remediation.core.checks import CODES, OTHER_ID, Codes
from remediation.core.columns import Indexes
from remediation.core.decided import (
    CORRECTED,
    QUARANTINED,
    VALID,
    VALID_KEPT,
    Decided,
)
from remediation.core.jsonrows import value_parts
from remediation.core.jsontext import json_parts, json_strings, json_text
from remediation.core.resent import resent
from remediation.core.rules import Changes
from remediation.core.text import TextPool, merged_constants
from remediation.outcomes import Tally
from remediation.sinks import Sinks
from remediation.spool import write_shared

# Audit lines gathered this many at a time: a batch's lines are about twice its input's bytes,
# and a slice's are let go once written, before the next is made.
AUDIT_SLICE_LINES = 4096

# A part of every line of a change: a constant, or each line's value taken from a text array
# at its position (an array shared by the batch's lines, a row's identifier at the row).
Part = str | tuple[pa.Array, Indexes]


class AuditLines:
    """The audit lines of one source's decided batches."""

    def __init__(self, source: str) -> None:
        self.source = source
        head = '{"kind": "%s", "source": ' + json_text(source)
        self.correction_head = head.replace("%s", "correction") + ', "row": '
        self.resend_head = head.replace("%s", "resend") + ', "row": '
        self.quarantine_head = head.replace("%s", "quarantine") + ', "row": '

    def write(self, decided: Decided, written: Indexes, new_ids: pa.Array, audit: TextIO) -> None:
        """One line per correction and quarantine, in row order (a row's corrections in the
        order they were made). Each line is the texts of its parts one after the other, so a
        gather of every line's parts in row order from one pool of texts makes the lines in
        their order at once (`_Gather`): no line is joined, then moved, on its own. What a
        change's lines share (the rule, the field, often the code) is one constant; a row's
        number and identifier are taken from the batch's, its new identifier from the
        written rows'."""
        rows = _RowTexts.of(decided, written, new_ids)
        lines = _Gather()
        for change in decided.changes:
            if len(change):
                lines.add(change.at, self._correction_parts(decided, change, rows))
        again = resent(decided, written, new_ids)
        if again is not None:  # its own kind: no correction, counted in no `corrections`
            lines.add(again.at, self._correction_parts(decided, again, rows, self.resend_head))
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            lines.add(quarantined, self._quarantine_parts(decided, quarantined, rows))
        if lines.empty:
            return
        audit.flush()
        for text in lines.texts(AUDIT_SLICE_LINES):
            write_shared(audit.buffer, array_bytes(text))

    def _correction_parts(
        self, decided: Decided, change: Changes, rows: _RowTexts, head: str = ""
    ) -> list[Part]:
        """The parts of the lines of one change (a rule's, on one field), a line a row."""
        own = np.arange(len(change), dtype=np.int64)
        return [
            head or self.correction_head,
            (rows.numbers, change.at),
            ', "identifier": ',
            *_at(rows.identifiers, change.at),
            ', "new_identifier": ',
            *_at(rows.new_identifiers, rows.by_row[change.at]),
            ', "code": ',
            _arrived_part(decided, change.at),
            ', "rule": ',
            _codes_part(change.rule, len(change)),
            ', "field": ',
            _codes_part(change.field, len(change)),
            ', "before": ',
            *_at(value_parts(change.before), own),
            ', "after": ',
            *_at(value_parts(change.after), own),
            "}\n",
        ]

    def _quarantine_parts(
        self, decided: Decided, quarantined: Indexes, rows: _RowTexts
    ) -> list[Part]:
        """The parts of the lines of the rows `quarantined`, a line a row."""
        own = np.arange(len(quarantined), dtype=np.int64)
        reasons = pa.array(decided.reason[quarantined], pa.string())
        return [
            self.quarantine_head,
            (rows.numbers, quarantined),
            ', "identifier": ',
            *_at(rows.identifiers, quarantined),
            ', "code": ',
            _arrived_part(decided, quarantined),
            ', "mfx_code": ',
            _codes_part(decided.mfx_code[quarantined], len(quarantined)),
            ', "reason": ',
            *_at(json_parts(reasons), own),
            "}\n",
        ]


@dataclass(frozen=True, slots=True)
class _RowTexts:
    """What the lines of a batch take per row: its number and identifier as JSON texts, and
    its new identifier's, found by the row's place among the written rows (`by_row`)."""

    numbers: pa.Array
    identifiers: list[pa.Array | str]
    new_identifiers: list[pa.Array | str]
    by_row: Indexes

    @classmethod
    def of(cls, decided: Decided, written: Indexes, new_ids: pa.Array) -> _RowTexts:
        by_row = np.full(len(decided.batch), -1, np.int64)
        by_row[written] = np.arange(len(written))
        return cls(
            pa.array(decided.batch.rows).cast(pa.large_string()),
            json_parts(decided.batch.identifier.text),
            json_parts(new_ids),
            by_row,
        )


class _Gather:
    """Lines made of parts, gathered in row order from one pool of texts (`TextPool`), a
    line of fewer parts padded with "". Each change's lines joined element-wise by Arrow,
    then put in row order with the other changes' (a concatenation and a gather), made every
    line's bytes three times: alternating runs of 1M CSV rows, `basic` 2.64-3.33 -> 2.53-3.05 s,
    `varied` 3.48-4.02 -> 3.21-3.33 s, peak RSS 5 MB lower."""

    def __init__(self) -> None:
        self._blocks: list[tuple[Indexes, list[Part]]] = []

    @property
    def empty(self) -> bool:
        return not self._blocks

    def add(self, rows: Indexes, parts: Sequence[Part]) -> None:
        """Lines for `rows` (one each, in this order), each the texts of `parts`."""
        self._blocks.append((rows, merged_constants(parts)))

    def texts(self, slice_lines: int) -> Iterator[pa.Array]:
        """The lines in row order (stable: lines added first come first within a row), as
        large_string arrays of a line's parts, `slice_lines` lines at a time."""
        named = (part for _, parts in self._blocks for part in parts if isinstance(part, str))
        pool = TextPool(named)  # every constant first: no place to resolve at the take
        width = max(len(parts) for _, parts in self._blocks)
        lines = sum(len(rows) for rows, _ in self._blocks)
        index = np.full((lines, width), pool.EMPTY, np.int64)
        at = 0
        for rows, parts in self._blocks:
            block = index[at : at + len(rows)]
            for column, part in enumerate(parts):
                if isinstance(part, str):
                    block[:, column] = pool.constant(part)
                else:
                    array, positions = part
                    if array.null_count:  # a null has no text: the caller says what to write
                        raise ValueError(f"audit line part holds {array.null_count} nulls")
                    if len(positions) and not 0 <= positions.min() <= positions.max() < len(array):
                        raise IndexError("audit line part: a position past its array")
                    block[:, column] = pool.start(array) + positions
            at += len(rows)
        rows = np.concatenate([rows for rows, _ in self._blocks])
        if (np.diff(rows) < 0).any():  # several changes, or a merged change's rows
            index = index[np.argsort(rows, kind="stable")]
        for start in range(0, len(index), slice_lines):
            yield pool.take(index[start : start + slice_lines])


def _at(parts: Sequence[pa.Array | str], positions: Indexes) -> list[Part]:
    """`parts` (constants and arrays) with each line's value at `positions` of each array."""
    return [part if isinstance(part, str) else (part, positions) for part in parts]


def account(
    lines: AuditLines,
    decided: Decided,
    written: Indexes,
    new_ids: pa.Array,
    sinks: Sinks,
    tally: Tally,
) -> None:
    """A written batch's audit (its lines in the audit file, its records for the service)
    and its counts."""
    assert sinks.audit_file is not None
    lines.write(decided, written, new_ids, sinks.audit_file)
    if sinks.on_audit is not None:
        records = audit_records(decided, lines.source, written, new_ids, sinks.customer_keys)
        sinks.on_audit(*records)
    count(decided, tally)


def array_bytes(text: pa.Array) -> memoryview:
    """The bytes of a large_string array's values, one after the other (no copy)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)
    start, end = offsets[text.offset], offsets[text.offset + len(text)]
    return memoryview(text.buffers()[2])[start:end]


def count(decided: Decided, tally: Tally) -> None:
    fate = decided.fate
    tally.count("valid", None, int(np.count_nonzero(fate <= VALID)), 0, 0)
    tally.valid_kept += int(np.count_nonzero(fate == VALID_KEPT))
    unclassified = decided.unclassified()
    for kind, value in (("corrected", CORRECTED), ("quarantined", QUARANTINED)):
        rows = np.flatnonzero(fate == value)
        if not len(rows):
            continue
        ids = decided.arrived_ids[rows]
        counts = np.bincount(ids, minlength=OTHER_ID + 1)
        odd = np.bincount(ids[unclassified[rows]], minlength=OTHER_ID + 1)
        for at in np.flatnonzero(counts[1:OTHER_ID]).tolist():
            code = CODES[at + 1]
            tally.count(kind, str(code), int(counts[at + 1]), 0, int(odd[at + 1]))
        if counts[OTHER_ID]:  # codes we do not know, counted by their texts
            other = ids == OTHER_ID
            arrived = decided.arrived[rows]
            by_text = Counter(arrived[other].tolist())
            odd_text = Counter(arrived[other & unclassified[rows]].tolist())
            for code, found in by_text.items():
                tally.count(kind, str(code), found, 0, odd_text[code])
    tally.count("valid", None, 0, int(decided.corrections.sum()), 0)


def _arrived_part(decided: Decided, rows: Indexes) -> Part:
    """The JSON text of the code each of `rows` arrived with, taken by its id from the codes'
    texts (no Python object a row), unless one is a code we do not know (or none)."""
    ids = decided.arrived_ids[rows]
    if not len(ids) or not _KNOWN_IDS[ids].all():
        return _codes_part(decided.arrived[rows], len(rows))
    texts, table = _code_json()
    if (ids == ids[0]).all():
        return texts[int(ids[0])]
    return table, ids.astype(np.int64)


_KNOWN_IDS = np.asarray([0 < at < OTHER_ID for at in range(OTHER_ID + 1)], bool)


@cache
def _code_json() -> tuple[list[str], pa.Array]:
    """Each code id's JSON text (`json_text` of its code; id 0, no code, is not written), as
    a list and as an array to take from (made once, not per change)."""
    texts = ["null", *(json_text(str(code)) for code in CODES[1:])]
    return texts, pa.array(texts, pa.large_string())


def _codes_part(codes: str | Sequence[str] | Codes, length: int) -> Part:
    """The JSON texts of a few distinct strings repeated over many lines (codes, rules,
    fields): one constant when every line has the same, else each line's taken from the
    distinct texts."""
    if isinstance(codes, str):
        return json_text(codes)
    encoded = pc.dictionary_encode(pa.array(np.asarray(codes, dtype=object), pa.string()))
    if len(encoded.dictionary) == 1 and not encoded.null_count:
        return json_text(encoded.dictionary[0].as_py())
    texts = json_strings(encoded.dictionary)
    if encoded.null_count:  # a line with no code: refused as a null part
        return texts.take(encoded.indices), np.arange(length, dtype=np.int64)
    return texts, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
