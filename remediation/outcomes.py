"""The running counts of a run (`Tally`) and the audit records it hands on (`AuditSink`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa

from remediation.codes import is_known

# A run counts its rows by the code each arrived with (`Tally.by_code`: the CLI's table, the
# service's run record, its alerts, digests and dashboard). A file's codes are Stripe's few and
# meterfix's own, each named; an unknown code is named too (a new code of Stripe's shows
# under its name), but a file of a code a row (hostile: 20,000 rows, 7.8 s of the CLI's 8.4 s
# spent drawing its table of 20,000 lines; a million would be a run record of tens of MB)
# names only its first `UNKNOWN_CODES_NAMED`; the rows of the others, and of a code longer
# than `CODE_CHARS`, are counted under `OTHER_CODES`. Each row's own code stays in the audit
# and the quarantine.
UNKNOWN_CODES_NAMED = 100
CODE_CHARS = 100
OTHER_CODES = "(other codes)"


@dataclass(slots=True)
class Tally:
    input_rows: int = 0
    valid: int = 0
    valid_kept: int = 0  # valid rows written to no output (never rejected, never re-sent)
    corrected: int = 0
    quarantined: int = 0
    unclassified: int = 0
    corrections: int = 0
    by_code: dict[str, dict[str, int]] = field(default_factory=dict)
    unknown_named: int = 0  # unknown codes counted under their own name so far

    def written(self) -> int:
        """Rows that went to an output."""
        return self.input_rows - self.valid_kept

    def count(
        self, kind: str, arrived: str | None, rows: int, corrections: int, unclassified: int
    ) -> None:
        """Count `rows` rows of one kind and code, with their corrections and unclassified."""
        self.input_rows += rows
        self.corrections += corrections
        self.unclassified += unclassified
        if kind == "valid":
            self.valid += rows
            return
        if kind == "corrected":
            self.corrected += rows
        else:
            self.quarantined += rows
        assert arrived is not None
        slot = self.by_code.get(arrived)
        if slot is None:
            slot = self.by_code.setdefault(self._named(arrived), {"corrected": 0, "quarantined": 0})
        slot[kind] += rows

    def _named(self, arrived: str) -> str:
        """The name a code is counted under: its own, but for an unknown code past the first
        `UNKNOWN_CODES_NAMED` (or longer than `CODE_CHARS`), `OTHER_CODES`."""
        if is_known(arrived):
            return arrived
        if len(arrived) > CODE_CHARS or self.unknown_named >= UNKNOWN_CODES_NAMED:
            return OTHER_CODES
        self.unknown_named += 1
        return arrived


class Correction(NamedTuple):
    """One change to one row, as the audit records it (values as text: `value_text`). The
    engine hands corrections over as columns of these fields (`CORRECTIONS`);
    `corrections_of` names them."""

    source: str
    row: int
    identifier: str | None
    new_identifier: str | None
    code: str  # the code the row arrived with
    rule: str
    field: str
    before: str | None
    after: str | None


class QuarantinedRow(NamedTuple):
    """One quarantined row: why, and the row in full (as its quarantine file holds it)."""

    source: str
    row: int
    identifier: str | None
    code: str  # the code the row arrived with
    mfx_code: str
    reason: str
    # The row in full as JSON text: what a JSON Lines quarantine file holds for it (json.dumps
    # of `writers.record_object` with `mfx_code` and `mfx_reason`, compact, not ASCII-escaped).
    record: str
    meter: str | None  # its event name
    customer: str | None  # the payload value under its meter's customer key, as text


# A batch's corrections as the engine hands them over: one Arrow record batch of `Correction`'s
# fields, a row per correction, in row order. Columns, not a tuple a correction: the service
# stages them with no Python object per correction (PostgreSQL: encoded for binary COPY by
# Arrow kernels); 900,000 tuples a run cost 0.5-0.9 s of the service's remediation stage to
# build (bench/service_path.py, alternating runs).
CORRECTIONS = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),
        ("identifier", pa.string()),
        ("new_identifier", pa.string()),
        ("code", pa.string()),
        ("rule", pa.string()),
        ("field", pa.string()),
        ("before", pa.string()),
        ("after", pa.string()),
    ]
)

# Receives a run's audit records as they are decided (a batch at a time, in row order).
AuditSink = Callable[[pa.RecordBatch, Sequence[QuarantinedRow]], None]


def corrections_batch(corrections: Sequence[Correction | tuple[object, ...]]) -> pa.RecordBatch:
    """`Correction`s (or plain tuples of its fields) as the engine hands them over."""
    fields = list(zip(*corrections, strict=True)) or [()] * len(CORRECTIONS)
    return pa.record_batch(
        [pa.array(values, column.type) for values, column in zip(fields, CORRECTIONS, strict=True)],
        schema=CORRECTIONS,
    )


def corrections_of(batch: pa.RecordBatch) -> list[Correction]:
    """The corrections of a batch the engine handed over, one `Correction` each."""
    return [Correction._make(row) for row in zip(*batch.to_pydict().values(), strict=True)]


def value_text(value: object) -> str | None:
    """A value before or after a change as the audit stores it: `str()` of it, None if none."""
    return None if value is None else str(value)
