"""Decided JSON Lines batches written as bytes: the corrected rows built on columns.

A corrected row's line is what `writers.RecordWriter` writes for its record (`json.dumps` of
`writers.record_object`, compact, `ensure_ascii=False`): the identifier, timestamp and event
name when present, the payload, then the other keys, each object's keys in the row's own
order (`Batch.order`). Rows sharing a layout (which keys, in which order) are joined
element-wise by Arrow, one layout at a time, then put back in row order. A batch holding a
value whose JSON text is not its column text (an object or array, a float that is not
finite) is left to the record path (`write` says False). Quarantined rows are written the
same way, as they came, their code and reason closing the line (`mfx_code`, `mfx_reason`, as
the record writer adds them). The audit is the one built on columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from remediation.core.audit import AuditLines, account, new_identifiers, value_parts
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.decide import QUARANTINED, Decided
from remediation.core.text import join, json_strings, json_text, line_bytes, take_parts
from remediation.filetypes import FileFormat
from remediation.identifiers import Identifiers
from remediation.outcomes import Tally
from remediation.outputs import OutputSet
from remediation.records import MFX_PREFIX
from remediation.sinks import Sinks

_NOT_FINITE = ("inf", "-inf", "nan")  # repr of a float json.dumps spells otherwise
_CORE = ("identifier", "timestamp", "event_name")


class JsonlOut:
    """Writes the decided batches of one JSON Lines input into `sinks`."""

    def __init__(self, sinks: Sinks, ids: Identifiers, source: str) -> None:
        self.sinks, self.ids, self.source = sinks, ids, source
        self.audit = AuditLines(source)

    def usable(self) -> bool:
        corrected = self.sinks.corrected
        return (
            isinstance(corrected, OutputSet)
            and corrected.fmt is FileFormat.JSONL
            and isinstance(self.sinks.quarantine, OutputSet)
            and self.sinks.audit_file is not None
        )

    def write(self, decided: Decided, tally: Tally) -> bool:
        """Write one decided batch; False (nothing written) when it needs the record path."""
        if not self.usable():
            return False
        written, out = decided.written()
        if not _plain(out):
            return False
        original = decided.batch.identifier.take(written)  # derived from the row as it came
        new_ids = new_identifiers(self.ids, original, decided.batch.rows[written])
        if len(out):
            data, ends = self.lines(out, new_ids)
            corrected = self.sinks.corrected
            assert isinstance(corrected, OutputSet)
            corrected.write_block(memoryview(data), ends.tolist())
        quarantined = np.flatnonzero(decided.fate == QUARANTINED)
        if len(quarantined):
            self._quarantine(decided, quarantined)
        account(self.audit, decided, written, new_ids, self.sinks, tally)
        return True

    def lines(
        self, batch: Batch, identifiers: pa.Array, notes: Sequence[tuple[str, pa.Array]] = ()
    ) -> tuple[pa.Buffer | bytes, Indexes]:
        """The JSON Lines bytes of `batch`'s rows written under `identifiers`, and where each
        line ends (as `text.csv_rows` gives them). `notes`: keys to close each line with, and
        their values as JSON texts (a quarantined row's code and reason)."""
        n = len(batch)
        cores = {
            "identifier": Column(identifiers),
            "timestamp": batch.timestamp,
            "event_name": batch.event_name,
        }
        present = {name: column.present() for name, column in cores.items()}
        assert batch.order is not None, "JSON rows keep their key order"
        # A row's layout as one number: its key order's code, then a bit per core field.
        layout = batch.order.codes.astype(np.int64) << len(_CORE)
        for bit, name in enumerate(_CORE):
            layout |= present[name].astype(np.int64) << bit
        kinds, of_row = np.unique(layout, return_inverse=True)
        layouts = {}
        for at, kind in enumerate(kinds.tolist()):
            has = tuple(bool(kind >> bit & 1) for bit in range(len(_CORE)))
            order = batch.order.distinct[kind >> len(_CORE)]
            layouts[(has, order)] = np.flatnonzero(of_row == at)
        encoded: dict[tuple[str, str], list[pa.Array | str]] = {}

        def values(group: str, key: str, column: Column, at: pa.Array) -> list[pa.Array | str]:
            found = encoded.get((group, key))
            if found is None:
                found = encoded[(group, key)] = value_parts(column)  # absent rows: "null"
            return take_parts(found, at)

        pieces, rows = [], []
        for (has, (payload_keys, extra_keys)), members in layouts.items():
            at = pa.array(members)
            parts: list[pa.Array | str] = ["{"]
            for name, there in zip(_CORE, has, strict=True):
                if there:
                    parts += [_key(name), *values("", name, cores[name], at), ","]
            parts.append('"payload":{')
            for key in payload_keys:
                parts += [_key(key), *values("p", key, batch.payload[key], at), ","]
            if payload_keys:
                parts.pop()
            parts.append("}")
            for key in extra_keys:
                if not key.startswith(MFX_PREFIX):
                    parts += [",", _key(key), *values("e", key, batch.extra[key], at)]
            for key, texts in notes:
                parts += [",", _key(key), texts.take(at)]
            parts.append("}\n")
            pieces.append(join(parts, len(members)))
            rows.append(members)
        every = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
        if len(pieces) > 1:
            position = np.empty(n, np.int64)
            position[np.concatenate(rows)] = np.arange(n, dtype=np.int64)
            every = every.take(pa.array(position))
        return line_bytes(every)

    def _quarantine(self, decided: Decided, rows: Indexes) -> None:
        """Quarantined rows as they came, closed by their code and reason: on columns, as
        the corrected rows are, or record by record when a value is written its own way
        (`_plain`)."""
        batch = decided.batch.take(rows)
        quarantine = self.sinks.quarantine
        if batch.order is not None and _plain(batch):
            closing = [
                ("mfx_code", json_strings(pa.array(decided.mfx_code[rows], pa.string()))),
                ("mfx_reason", json_strings(pa.array(decided.reason[rows], pa.string()))),
            ]
            data, ends = self.lines(batch, batch.identifier.text, closing)
            assert isinstance(quarantine, OutputSet)
            quarantine.write_block(memoryview(data), ends.tolist())
            return
        for i, record in zip(rows.tolist(), batch.records(), strict=True):
            notes = {"mfx_code": decided.mfx_code[i], "mfx_reason": decided.reason[i]}
            quarantine.write(record, notes)


def _key(key: str) -> str:
    """A key as JSON, with its colon."""
    return json_text(key) + ":"


def _plain(batch: Batch) -> bool:
    """Every value's JSON text is its column text or its quoted string (no object or array,
    no float json.dumps spells its own way)."""
    columns: Sequence[Column] = [
        batch.timestamp,
        batch.event_name,
        *batch.payload.values(),
        *batch.extra.values(),
    ]
    for column in columns:
        kinds = column.kinds
        if kinds is None:
            continue
        if (kinds == Kind.JSON).any():
            return False
        floats = np.flatnonzero(kinds == Kind.FLOAT)
        if len(floats) and any(
            t in _NOT_FINITE for t in column.text.take(pa.array(floats)).to_pylist()
        ):
            return False
    return True
