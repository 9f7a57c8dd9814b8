"""The rows a run re-sends as they came, in the audit: the valid rows of an input Stripe
rejected (a whole-file failure's, a failed-records row that passes now, a quarantined row a
re-run finds passing) go out under a derived identifier with no rule changing anything.
Without a line, nothing said we wrote `x-mfx1`: refused by Stripe later from an import set
naming no object of ours, it was taken for the customer's own identifier (re-sent as
`x-mfx1-mfx1`, its loop protection lost). Each has one line, rule `RESEND_RULE`, its
identifier before and after (counted in no `corrections`: nothing of the row was corrected);
a row that arrived with no code has the code `UNTOLD_CODE`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from remediation.core.column import Column
from remediation.core.columns import Indexes
from remediation.core.decided import VALID, Decided
from remediation.core.filerepairs import UNTOLD_CODE
from remediation.core.rules import Changes

RESEND_RULE = "resend_unchanged"


def resent(decided: Decided, written: Indexes, new_ids: pa.Array) -> Changes | None:
    """The line of each row of `written` (`new_ids` theirs) that goes out as it came: valid,
    no change of any rule's."""
    valid = np.flatnonzero(decided.fate[written] == VALID)  # places among `written`
    if not len(valid):
        return None
    changed = [change.at for change in decided.changes if len(change)]
    if changed:
        valid = valid[~np.isin(written[valid], np.concatenate(changed))]
        if not len(valid):
            return None
    rows = written[valid]
    untold = rows[decided.arrived_ids[rows] == 0]  # no code (id 0: `checks.CODES`)
    decided.arrived[untold] = UNTOLD_CODE
    before = Column(decided.batch.identifier.text.take(pa.array(rows)))
    after = Column(new_ids.take(pa.array(valid)))
    return Changes(rows, RESEND_RULE, "identifier", before, after)
