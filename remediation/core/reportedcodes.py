"""The code each row of a batch arrived with: what Stripe said of it (`BatchDecider` decides
by it; a rule whose reason says what Stripe found asks it too)."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from remediation.codes import code_from_message
from remediation.core.checks import CODE_IDS, OTHER_ID, CodeIds, Codes
from remediation.core.columns import Batch


def reported_codes(batch: Batch) -> tuple[Codes, CodeIds]:
    """The code each row arrived with (explicit, else from a known message text, else None),
    and the same as ids (`checks.CODES`; `OTHER_ID` for a code we do not know). A file holds
    few distinct codes: each is made a Python string and looked up once, not once a row."""
    encoded = pc.dictionary_encode(batch.error_code)
    distinct = [*encoded.dictionary.to_pylist(), None]
    at = encoded.indices.fill_null(len(distinct) - 1).to_numpy(zero_copy_only=False)
    codes: Codes = np.asarray(distinct, dtype=object)[at]
    ids: CodeIds = np.asarray([CODE_IDS.get(c, OTHER_ID) for c in distinct], np.int16)[at]
    missing = pc.is_null(batch.error_code)
    if not pc.any(pc.and_(missing, pc.is_valid(batch.error_message))).as_py():
        return codes, ids
    encoded = pc.dictionary_encode(batch.error_message)
    known = [code_from_message(m) for m in encoded.dictionary.to_pylist()]
    index = encoded.indices.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(np.asarray(missing)).tolist():
        position = index[i]
        if position == position:  # not NaN: the row has a message
            found = known[int(position)]
            codes[i] = found.value if found else None
            ids[i] = CODE_IDS[found]
    return codes, ids
