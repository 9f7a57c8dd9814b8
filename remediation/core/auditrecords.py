"""A decided batch's audit as records for the service (`sinks.Sinks.on_audit`): its corrections
as one record batch of `outcomes.CORRECTIONS`, its quarantined rows in full; apart from the
audit file's lines (`audit`), which are text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from remediation.core.column import as_string
from remediation.core.columns import Batch, Column, Indexes, Kind
from remediation.core.decided import QUARANTINED, Decided
from remediation.core.jsonrows import plain, quarantine_notes, row_texts
from remediation.core.resent import resent
from remediation.jsonnumbers import dumps
from remediation.meters import DEFAULT_CUSTOMER_KEY
from remediation.outcomes import CORRECTIONS, QuarantinedRow, value_text
from remediation.records import UsageRecord
from remediation.writers import record_object


def audit_records(
    decided: Decided,
    source: str,
    written: Indexes,
    new_ids: pa.Array,
    customer_keys: Mapping[str, str],
) -> tuple[pa.RecordBatch, list[QuarantinedRow]]:
    """The batch's audit as records, in row order: corrections as one record batch of
    `CORRECTIONS` (each field put in row order as one array), quarantined rows with the row
    in full (as the quarantine file holds it, as JSON text)."""
    by_row = np.full(len(decided.batch), -1, np.int64)
    by_row[written] = np.arange(len(written))
    changes = [change for change in decided.changes if len(change)]
    again = resent(decided, written, new_ids)
    if again is not None:  # a row re-sent as it came: `core.resent`
        changes.append(again)
    quarantined = _quarantined_rows(decided, source, customer_keys)
    if not changes:
        return NO_CORRECTIONS, quarantined
    at = np.concatenate([change.at for change in changes])
    order = np.argsort(at, kind="stable")
    rows = at[order]
    taken = pa.array(rows)
    names = [
        pa.array(
            np.concatenate([_repeated(getattr(c, name), len(c)) for c in changes])[order],
            pa.string(),
        )
        for name in ("rule", "field")
    ]
    values = [
        pa.concat_arrays([_texts(getattr(c, name)) for c in changes]).take(pa.array(order))
        for name in ("before", "after")
    ]
    columns = [
        pa.repeat(source, len(rows)),
        pa.array(decided.batch.rows[rows]),
        as_string(decided.batch.identifier.text.take(taken)),
        as_string(new_ids.take(pa.array(by_row[rows]))),
        pa.array(decided.arrived[rows], pa.string()),
        *names,
        *values,
    ]
    return pa.record_batch(columns, schema=CORRECTIONS), quarantined


NO_CORRECTIONS = pa.RecordBatch.from_pylist([], schema=CORRECTIONS)


def _repeated(value: str | Sequence[str], n: int) -> npt.NDArray[np.object_]:
    if isinstance(value, str):
        return np.full(n, value, dtype=object)
    return np.asarray(value, dtype=object)


def _texts(column: Column) -> pa.Array:
    """`value_text` of each value: numbers and text as their text (a boolean as Python
    spells it, an object as `str()` of it), null where absent."""
    if column.kinds is None or not np.isin(column.kinds, (Kind.BOOL, Kind.JSON, Kind.NULL)).any():
        return as_string(column.text)
    return pa.array([value_text(value) for value in column.values()], pa.string())


def _quarantined_rows(
    decided: Decided, source: str, customer_keys: Mapping[str, str]
) -> list[QuarantinedRow]:
    """The batch's quarantined rows, each with the row in full as JSON text (what a JSON
    Lines quarantine file holds for it: `jsonrows.row_texts`, or `_record_json` per record
    when a value is written its own way), its event name, and the value under its meter's
    customer key (`customer_keys`; `stripe_customer_id` for an event name no meter has)."""
    rows = np.flatnonzero(decided.fate == QUARANTINED)
    if not len(rows):
        return []
    batch = decided.batch.take(rows)
    codes = [str(code) for code in decided.mfx_code[rows].tolist()]
    reasons = [str(reason) for reason in decided.reason[rows].tolist()]
    if plain(batch):
        notes = quarantine_notes(codes, reasons)
        texts = row_texts(batch, batch.identifier.text, notes).to_pylist()
    else:
        texts = [
            _record_json(record, code, reason)
            for record, code, reason in zip(batch.records(), codes, reasons, strict=True)
        ]
    meters = [value_text(value) for value in batch.event_name.values()]
    return [
        QuarantinedRow(source, *fields)
        for fields in zip(
            batch.rows.tolist(),
            [value_text(value) for value in batch.identifier.values()],
            [str(code) for code in decided.arrived[rows].tolist()],
            codes,
            reasons,
            texts,
            meters,
            _customers(batch, meters, customer_keys),
            strict=True,
        )
    ]


def _record_json(record: UsageRecord, code: str, reason: str) -> str:
    """A quarantined record as JSON text, as a JSON Lines quarantine file holds it."""
    full = {**record_object(record, as_came=True), "mfx_code": code, "mfx_reason": reason}
    return dumps(full)


def _customers(
    batch: Batch, meters: Sequence[str | None], customer_keys: Mapping[str, str]
) -> list[str | None]:
    """Each row's value under its meter's customer key, as text (None where absent)."""
    keys = np.asarray(
        [customer_keys.get(meter or "", DEFAULT_CUSTOMER_KEY) for meter in meters], dtype=object
    )
    found: list[str | None] = [None] * len(batch)
    for key in set(keys.tolist()):
        column = batch.payload.get(key)
        if column is None:
            continue
        at = np.flatnonzero(keys == key)
        values = column.take(at).values()
        for i, value in zip(at.tolist(), values, strict=True):
            found[i] = value_text(value)
    return found
