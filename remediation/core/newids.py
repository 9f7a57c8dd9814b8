"""The identifier each written row goes out under, made for a column at once: the plain derived
form by Arrow, and `identifiers.Identifiers.new` only for the rows it must decide itself.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.column import Mask
from remediation.core.columns import Column, Indexes
from remediation.core.text import join
from remediation.core.textmeasures import mask
from remediation.identifiers import HASH_DIGITS, HASHED_KEEP, Identifiers


def new_identifiers(ids: Identifiers, identifier: Column, rows: Indexes) -> pa.Array:
    """The identifier each written row goes out under (`Identifiers.new`, on a column)."""
    text = identifier.text
    if ids.keep:
        return text
    n = len(text)
    length = pc.utf8_length(text)
    fits = pc.and_(pc.greater(length, 0), pc.less_equal(length, ids.longest_plain))
    simple = np.asarray(pc.fill_null(fits, False))
    if ids.ancestors:
        ours = pc.is_in(text, pa.array(list(ids.ancestors), pa.string()))
        simple &= ~np.asarray(pc.fill_null(ours, False))
    filled = pc.fill_null(text, "")
    plain = join([filled, ids.suffix], n)
    if ids.reserved:
        clash = pc.is_in(plain, pa.array(list(ids.reserved), pa.string()))
        simple &= ~np.asarray(pc.fill_null(clash, False))
    simple &= ~_may_be_hashed(text, length, bool(ids.reserved))
    others = np.flatnonzero(~simple)
    if not len(others):
        return plain
    values = text.take(pa.array(others)).to_pylist()
    derived = [ids.new(v, int(r)) for v, r in zip(values, rows[others].tolist(), strict=True)]
    index = np.arange(n, dtype=np.int64)
    index[others] = n + np.arange(len(others))
    extra = pa.array(derived, pa.large_string())
    return pa.concat_arrays([plain.cast(pa.large_string()), extra]).take(pa.array(index))


def _may_be_hashed(text: pa.Array, length: pa.Array, reserved: bool) -> Mask:
    """Rows `identifiers.may_be_hashed` may hold true for (`Identifiers.new` decides them):
    shaped `<head>-<12 hex digits>`; with no reserved originals only a head of 80 characters
    (93 in all) can be one, and only those rows are matched."""
    found: Mask = np.zeros(len(text), bool)
    if reserved:
        rows = np.arange(len(text))
    else:
        rows = np.flatnonzero(mask(pc.equal(length, HASHED_KEEP + 1 + HASH_DIGITS)))
    if len(rows):
        found[rows] = mask(pc.match_substring_regex(text.take(pa.array(rows)), _HASHED_TAIL))
    return found


_HASHED_TAIL = f"-[0-9a-f]{{{HASH_DIGITS}}}$"
