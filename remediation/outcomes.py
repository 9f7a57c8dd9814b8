"""What the engine decided for one row (`Outcome`) and the running counts of a run (`Tally`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from remediation.records import UsageRecord


@dataclass(slots=True)
class Outcome:
    """`record` goes to the corrected output, or with `notes` to quarantine; `audit` entries
    are written in order."""

    kind: str  # valid | corrected | quarantined
    arrived: str | None  # the code the row arrived with (or was classified with)
    record: UsageRecord
    notes: dict[str, object] | None
    audit: list[dict[str, Any]]
    corrections: int = 0
    unclassified: bool = False


@dataclass(slots=True)
class Tally:
    input_rows: int = 0
    valid: int = 0
    corrected: int = 0
    quarantined: int = 0
    unclassified: int = 0
    corrections: int = 0
    by_code: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, outcome: Outcome, times: int = 1) -> None:
        """Count `times` rows that had this outcome."""
        self.input_rows += times
        self.corrections += outcome.corrections * times
        self.unclassified += times if outcome.unclassified else 0
        if outcome.kind == "valid":
            self.valid += times
            return
        if outcome.kind == "corrected":
            self.corrected += times
        else:
            self.quarantined += times
        assert outcome.arrived is not None
        slot = self.by_code.setdefault(outcome.arrived, {"corrected": 0, "quarantined": 0})
        slot[outcome.kind] += times
