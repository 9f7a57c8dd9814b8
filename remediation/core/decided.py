"""What deciding a batch records (`Decided`): where each row goes (its fate: `VALID_KEPT`,
`VALID`, `CORRECTED`, `QUARANTINED`) and why. Apart from `decide` and `rounds`, which fill it,
so the writers that read it import neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.core.batchjoin import interleaved
from remediation.core.checks import CODES, CodeIds, Codes
from remediation.core.column import Mask
from remediation.core.columns import Batch, Indexes
from remediation.core.rules import Changes

_KNOWN: Mask = np.asarray([code in KNOWN_CODES for code in CODES] + [False], bool)
VALID_KEPT, VALID, CORRECTED, QUARANTINED = 0, 1, 2, 3


@dataclass(slots=True)
class Decided:
    """Where each row of a batch goes (`fate`), and what is recorded about it."""

    batch: Batch  # the input rows
    fixed: Batch  # the corrected rows, in input order (`corrected` indexes into `batch`)
    corrected: Indexes
    fate: npt.NDArray[np.int8]
    arrived: Codes
    mfx_code: Codes
    reason: Codes
    changes: list[Changes] = field(default_factory=list)  # `at` indexes into `batch`
    corrections: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    # `arrived` as code ids (`checks.CODES`; `OTHER_ID` where it is a code we do not know)
    arrived_ids: CodeIds = field(default_factory=lambda: np.zeros(0, np.int16))

    def written(self) -> tuple[Indexes, Batch]:
        """The rows that go to the corrected output (valid and corrected: their places in
        `batch`, ascending) and those rows as written (corrected ones as corrected)."""
        written = np.flatnonzero((self.fate == VALID) | (self.fate == CORRECTED))
        valid = np.flatnonzero(self.fate == VALID)
        if not len(self.corrected):
            return written, self.batch.take(valid)
        if not len(valid):
            return written, self.fixed
        return written, interleaved(self.batch, valid, self.fixed, self.corrected)

    def unclassified(self) -> Mask:
        """Quarantined rows that arrived with a code we do not know (or none), or that we could
        not classify."""
        flags: Mask = np.zeros(len(self.fate), bool)
        rows = np.flatnonzero(self.fate == QUARANTINED)
        flags[rows] = ~_KNOWN[self.arrived_ids[rows]]
        flags[rows] |= np.asarray(self.mfx_code[rows] == ErrorCode.UNCLASSIFIED, bool)
        return flags
