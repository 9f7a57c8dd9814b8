"""What a whole-file repair changed in a row's values, in the audit of each row that goes out.

A CSV header without an event_name column, which Stripe fails as a whole, is read with the
rules' `default_event_name` filled into every row (`repair.plan_input`). Each row re-sent so
was changed: its audit says so (before, its corrected row went out with no line about it,
and nothing told that the meter it was billed to was named by us). The row keeps its count
(`valid` when nothing of its own failed: `by_code` counts the codes rows arrived with); a row
that arrived with no code has the audit code `UNTOLD_CODE`. The file's repairs that
change no value (its delimiter, a column read under an alias) are the run's, said once
(`repair.InputPlan.repairs`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from remediation.changes import FileRepairs
from remediation.core.column import Column
from remediation.core.decided import CORRECTED, VALID, Decided
from remediation.core.rules import Changes

# The audit code of a row of an input Stripe rejected that arrived with no code of its own
# (a file Stripe failed as a whole, the bundled poller's too; a failed-records row without
# one): its changes (here) and its line when it is re-sent as it came (`resent`).
UNTOLD_CODE = "rejected"
DEFAULT_EVENT_NAME_RULE = "default_event_name"


def record_file_repairs(decided: Decided, repairs: FileRepairs) -> None:
    """The changes `repairs` made to the rows of `decided` that go out, first among each
    row's changes (made as the row was read, before any rule's)."""
    if not repairs:
        return
    at = np.flatnonzero((decided.fate == VALID) | (decided.fate == CORRECTED))
    if not len(at):
        return
    n = len(at)
    filled = Changes(
        at,
        DEFAULT_EVENT_NAME_RULE,
        "event_name",
        Column(pa.nulls(n, pa.string())),
        Column(pa.repeat(pa.scalar(repairs.event_name, pa.string()), n)),
    )
    decided.changes.insert(0, filled)
    decided.corrections[at] += 1
    untold = at[decided.arrived_ids[at] == 0]  # no code (id 0: `checks.CODES`)
    decided.arrived[untold] = UNTOLD_CODE
