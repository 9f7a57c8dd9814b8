"""A decided batch as row outcomes, in input order: what the output sets and the audit take.

Correction entries come from the rules' `Changes` (the changed-row masks), quarantine entries
from the reasons; the corrected rows get their identifiers per `identifiers`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.core.decide import CORRECTED, QUARANTINED, VALID, VALID_KEPT, Decided
from remediation.identifiers import Identifiers
from remediation.outcomes import Outcome


def outcomes(decided: Decided, ids: Identifiers, source: str) -> list[Outcome]:
    records = decided.batch.records()
    fixed = dict(zip(decided.corrected.tolist(), decided.fixed.records(), strict=True))
    entries = _corrections(decided)
    out = []
    for i, record in enumerate(records):
        fate = int(decided.fate[i])
        if fate == VALID_KEPT:
            out.append(Outcome("valid", None, record, None, [], write=False))
        elif fate == VALID:
            record.identifier = ids.new(record.identifier, record.row_number)
            out.append(Outcome("valid", None, record, None, []))
        elif fate == CORRECTED:
            row = fixed[i]
            row.identifier = ids.new(record.identifier, record.row_number)
            arrived = str(decided.arrived[i])
            audit = [
                _correction(
                    source, record.row_number, record.identifier, row.identifier, arrived, e
                )
                for e in entries[i]
            ]
            out.append(Outcome("corrected", arrived, row, None, audit, len(audit)))
        else:
            assert fate == QUARANTINED
            out.append(_quarantined(source, record, decided, i))
    return out


def _corrections(decided: Decided) -> dict[int, list[tuple[str, str, object, object]]]:
    entries: dict[int, list[tuple[str, str, object, object]]] = defaultdict(list)
    for change in decided.changes:
        before, after = change.before.values(), change.after.values()
        for j, row in enumerate(change.at.tolist()):
            rule = change.rule if isinstance(change.rule, str) else change.rule[j]
            name = change.field if isinstance(change.field, str) else change.field[j]
            entries[row].append((rule, name, before[j], after[j]))
    return entries


def _correction(
    source: str,
    row: int,
    identifier: str | None,
    new: str | None,
    arrived: str,
    entry: tuple[str, str, object, object],
) -> dict[str, Any]:
    rule, name, before, after = entry
    return {
        "kind": "correction",
        "source": source,
        "row": row,
        "identifier": identifier,
        "new_identifier": new,
        "code": arrived,
        "rule": rule,
        "field": name,
        "before": before,
        "after": after,
    }


def _quarantined(source: str, record: Any, decided: Decided, i: int) -> Outcome:
    arrived, code, reason = decided.arrived[i], str(decided.mfx_code[i]), str(decided.reason[i])
    entry = {
        "kind": "quarantine",
        "source": source,
        "row": record.row_number,
        "identifier": record.identifier,
        "code": arrived,
        "mfx_code": code,
        "reason": reason,
    }
    unclassified = arrived not in KNOWN_CODES or code == ErrorCode.UNCLASSIFIED
    notes: dict[str, object] = {"mfx_code": code, "mfx_reason": reason}
    return Outcome("quarantined", arrived, record, notes, [entry], unclassified=unclassified)
