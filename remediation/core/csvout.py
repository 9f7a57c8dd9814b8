"""Decided CSV batches written as bytes: corrected and quarantine rows, audit lines, counts.

The bytes are what the record writers write for the same rows (`csv.writer` cells, the audit's
`json.dumps` lines), built on whole columns (`text`). A batch whose corrected rows need another
layout (a key the header has no column for) is left to the record path (`write` says False),
as is every batch once an output was opened with other columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.codes import ErrorCode
from remediation.core.columns import Batch, Column, Indexes, Kind, Mask, concat_batches
from remediation.core.decide import CORRECTED, QUARANTINED, VALID, VALID_KEPT, Decided
from remediation.core.text import csv_rows, join, json_strings
from remediation.identifiers import Identifiers
from remediation.outcomes import Tally
from remediation.outputs import OutputSet
from remediation.records import PAYLOAD_PREFIX
from remediation.sinks import Sinks
from remediation.writers import output_columns

NULL = "null"


class CsvOut:
    """Writes the decided batches of one CSV input into `sinks`."""

    def __init__(self, sinks: Sinks, columns: Sequence[str], ids: Identifiers, source: str):
        self.sinks, self.ids, self.source = sinks, ids, source
        self.columns = output_columns(columns)
        self.payload_keys = {
            c[len(PAYLOAD_PREFIX) :] for c in self.columns if c.startswith(PAYLOAD_PREFIX)
        }
        head = '{"kind": "%s", "source": ' + json_strings(pa.array([source])).to_pylist()[0]
        self.correction_head = head.replace("%s", "correction") + ', "row": '
        self.quarantine_head = head.replace("%s", "quarantine") + ', "row": '

    def usable(self) -> bool:
        corrected, quarantine = self.sinks.corrected, self.sinks.quarantine
        if not isinstance(corrected, OutputSet) or not isinstance(quarantine, OutputSet):
            return False
        ready = _takes_bytes(corrected) and _takes_bytes(quarantine)
        return ready and self.sinks.audit_file is not None

    def write(self, decided: Decided, tally: Tally) -> bool:
        """Write one decided batch; False (nothing written) when it needs the record path."""
        if not self.usable():
            return False
        written = np.flatnonzero((decided.fate == VALID) | (decided.fate == CORRECTED))
        out = self._written_rows(decided, written)
        if not self._fits(out):
            return False
        new_ids = new_identifiers(self.ids, out.identifier, out.rows)
        if len(out):
            self._block(self.sinks.corrected, self._cells(out, new_ids))
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            self._quarantine(decided, quarantined)
        self._audit(decided, written, new_ids, quarantined)
        _count(decided, tally)
        return True

    def _written_rows(self, decided: Decided, written: Indexes) -> Batch:
        valid = np.flatnonzero(decided.fate == VALID)
        if not len(decided.corrected):
            return decided.batch.take(valid)
        both = concat_batches([decided.batch.take(valid), decided.fixed])
        order = np.argsort(np.concatenate([valid, decided.corrected]), kind="stable")
        return both.take(order)

    def _fits(self, out: Batch) -> bool:
        for key, column in out.payload.items():
            if key not in self.payload_keys and column.present().any():
                return False
        return all(name in self.columns for name in out.extra)

    def _cells(self, batch: Batch, identifiers: pa.Array) -> list[pa.Array]:
        cells = []
        for name in self.columns:
            if name == "identifier":
                cells.append(identifiers)
            elif name in ("timestamp", "event_name"):
                cells.append(getattr(batch, name).text)
            elif name.startswith(PAYLOAD_PREFIX):
                column = batch.payload.get(name[len(PAYLOAD_PREFIX) :])
                cells.append(column.text if column is not None else _empty(len(batch)))
            else:
                column = batch.extra.get(name)
                cells.append(column.text if column is not None else _empty(len(batch)))
        return cells

    def _block(self, output: object, cells: list[pa.Array]) -> None:
        assert isinstance(output, OutputSet)
        data, ends = csv_rows(cells)
        output.write_block(memoryview(data), ends.tolist())

    def _quarantine(self, decided: Decided, rows: Indexes) -> None:
        batch = decided.batch.take(rows)
        cells = self._cells(batch, batch.identifier.text)
        cells.append(pa.array(decided.mfx_code[rows], pa.string()))
        cells.append(pa.array(decided.reason[rows], pa.string()))
        self._block(self.sinks.quarantine, cells)

    def _audit(
        self, decided: Decided, written: Indexes, new_ids: pa.Array, quarantined: Indexes
    ) -> None:
        """One line per correction and quarantine, in row order (a row's corrections in the
        order they were made): the pieces are put in order first, then joined once."""
        by_row = np.full(len(decided.batch), -1, np.int64)
        by_row[written] = np.arange(len(written))
        new_json = json_strings(new_ids)
        arrived = _json_codes(decided.arrived)
        chunks: list[tuple[Indexes, list[pa.Array | str]]] = []
        for change in decided.changes:
            if len(change):
                at = pa.array(change.at)
                new = new_json.take(pa.array(by_row[change.at]))
                chunks.append(
                    (
                        change.at,
                        [
                            new,
                            arrived.take(at),
                            _json_of(change.rule),
                            _json_of(change.field),
                            value_json(change.before),
                            value_json(change.after),
                        ],
                    )
                )
        corrections = len(chunks)
        if len(quarantined):
            mfx = _json_codes(decided.mfx_code[quarantined])
            reason = json_strings(pa.array(decided.reason[quarantined], pa.string()))
            chunks.append(
                (quarantined, [arrived.take(pa.array(quarantined)), mfx, reason, "", "", ""])
            )
        if chunks:
            self._write_audit(decided, chunks, corrections)
        if self.sinks.on_audit is not None:
            self._on_audit(decided, written, new_ids, quarantined)

    def _write_audit(
        self,
        decided: Decided,
        chunks: list[tuple[Indexes, list[pa.Array | str]]],
        corrections: int,
    ) -> None:
        rows = np.concatenate([at for at, _ in chunks])
        order = np.argsort(rows, kind="stable")
        taken = pa.array(rows[order])
        quarantine = np.concatenate(
            [np.full(len(at), n >= corrections) for n, (at, _) in enumerate(chunks)]
        )[order]
        numbers = pa.array(decided.batch.rows).cast(pa.string()).take(taken)
        identifiers = json_strings(decided.batch.identifier.text.take(taken))
        values = [
            _in_order([c[1][j] for c in chunks], [len(c[0]) for c in chunks], order)
            for j in range(6)
        ]
        labels = [_labels(pair, quarantine) for pair in _AUDIT_LABELS]
        parts: list[pa.Array | str] = [
            _labels((self.correction_head, self.quarantine_head), quarantine),
            numbers,
            ', "identifier": ',
            identifiers,
        ]
        for label, value in zip(labels, values, strict=True):
            parts += [label, value]
        parts.append(_labels(("}\n", ""), quarantine))
        text = join(parts, len(rows))
        audit = self.sinks.audit_file
        assert audit is not None
        audit.flush()
        audit.buffer.write(array_bytes(text))

    def _on_audit(
        self, decided: Decided, written: Indexes, new_ids: pa.Array, quarantined: Indexes
    ) -> None:
        """The same entries as dicts, in row order (the service records them)."""
        from remediation.core.outcomes import outcomes

        assert self.sinks.on_audit is not None
        del written, new_ids, quarantined
        for outcome in outcomes(decided, self.ids, self.source):
            row = None
            if outcome.notes is not None:
                from remediation.writers import record_object

                row = {**record_object(outcome.record), **outcome.notes}
            for entry in outcome.audit:
                self.sinks.on_audit(entry if row is None else {**entry, "record": row})


# the label before each of the six values of a (correction, quarantine) line
_AUDIT_LABELS = (
    (', "new_identifier": ', ', "code": '),
    (', "code": ', ', "mfx_code": '),
    (', "rule": ', ', "reason": '),
    (', "field": ', "}\n"),
    (', "before": ', ""),
    (', "after": ', ""),
)


def _labels(pair: tuple[str, str], quarantine: Mask) -> pa.Array | str:
    """The first text for correction lines, the second for quarantine lines."""
    if not quarantine.any():
        return pair[0]
    if quarantine.all():
        return pair[1]
    return pa.array(pair, pa.large_string()).take(pa.array(quarantine.astype(np.int64)))


def _in_order(pieces: list[pa.Array | str], lengths: list[int], order: Indexes) -> pa.Array | str:
    """One value of every line, from each chunk's piece, put in line order."""
    if all(isinstance(p, str) for p in pieces) and len(set(pieces)) == 1:
        text = str(pieces[0])
        return text
    arrays = [
        p.cast(pa.large_string())
        if not isinstance(p, str)
        else pa.repeat(pa.scalar(p, pa.large_string()), n)
        for p, n in zip(pieces, lengths, strict=True)
    ]
    return pa.concat_arrays(arrays).take(pa.array(order))


def _takes_bytes(output: OutputSet) -> bool:
    """The first layout has (or will have) the set's columns: rows can go in as bytes."""
    if not output.layouts:
        return output.columns is not None
    return output.layouts[0][0].writer.columns == list(output.columns or ())


def array_bytes(text: pa.Array) -> memoryview:
    """The bytes of a large_string array's values, one after the other (no copy)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)
    start, end = offsets[text.offset], offsets[text.offset + len(text)]
    return memoryview(text.buffers()[2])[start:end]


def _count(decided: Decided, tally: Tally) -> None:
    fate = decided.fate
    tally.count("valid", None, int(np.count_nonzero(fate <= VALID)), 0, 0)
    tally.valid_kept += int(np.count_nonzero(fate == VALID_KEPT))
    unclassified = decided.unclassified()
    for kind, value in (("corrected", CORRECTED), ("quarantined", QUARANTINED)):
        rows = np.flatnonzero(fate == value)
        if not len(rows):
            continue
        codes = pa.array(decided.arrived[rows], pa.string()).dictionary_encode()
        counts = np.bincount(codes.indices.to_numpy(), minlength=len(codes.dictionary))
        odd = np.bincount(
            codes.indices.to_numpy()[unclassified[rows]], minlength=len(codes.dictionary)
        )
        for at, name in enumerate(codes.dictionary.to_pylist()):
            tally.count(kind, name, int(counts[at]), 0, int(odd[at]))
    tally.count("valid", None, 0, int(decided.corrections.sum()), 0)


def new_identifiers(ids: Identifiers, identifier: Column, rows: Indexes) -> pa.Array:
    """The identifier each written row goes out under (`Identifiers.new`, on a column)."""
    text = identifier.text
    if ids.keep:
        return text
    n = len(text)
    simple = np.asarray(pc.fill_null(pc.less_equal(pc.utf8_length(text), ids.longest_plain), False))
    if ids.ancestors:
        ours = pc.is_in(text, pa.array(list(ids.ancestors), pa.string()))
        simple &= ~np.asarray(pc.fill_null(ours, False))
    filled = pc.fill_null(text, "")
    plain = join([filled, ids.suffix], n)
    if ids.reserved:
        clash = pc.is_in(plain, pa.array(list(ids.reserved), pa.string()))
        simple &= ~np.asarray(pc.fill_null(clash, False))
    others = np.flatnonzero(~simple)
    if not len(others):
        return plain
    values = text.take(pa.array(others)).to_pylist()
    derived = [ids.new(v, int(r)) for v, r in zip(values, rows[others].tolist(), strict=True)]
    index = np.arange(n, dtype=np.int64)
    index[others] = n + np.arange(len(others))
    extra = pa.array(derived, pa.large_string())
    return pa.concat_arrays([plain.cast(pa.large_string()), extra]).take(pa.array(index))


def value_json(column: Column) -> pa.Array:
    """Each value as the audit's json.dumps writes it (text quoted, numbers as they are)."""
    if column.kinds is None:
        return json_strings(column.text)
    literal = column.kinds != Kind.TEXT
    raw = pc.fill_null(column.text, NULL)
    if literal.all():
        return raw
    quoted = json_strings(column.text)
    if not literal.any():
        return quoted
    n = len(column)
    index = np.where(literal, n + np.arange(n), np.arange(n))
    both = pa.concat_arrays([quoted.cast(pa.large_string()), raw.cast(pa.large_string())])
    return both.take(pa.array(index))


def _json_of(value: str | Sequence[str]) -> pa.Array | str:
    if isinstance(value, str):
        text: str = json_strings(pa.array([value])).to_pylist()[0]
        return text
    return _json_codes(np.asarray(value, dtype=object))


def _json_codes(codes: Any) -> pa.Array:
    """JSON texts of a few distinct strings repeated over many rows (codes, rules, fields)."""
    encoded = pc.dictionary_encode(pa.array(codes, pa.string()))
    return json_strings(encoded.dictionary).take(encoded.indices)


def _empty(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())


__all__ = ["CsvOut", "ErrorCode"]
