"""Audit entries of the fast path, as dicts (for `on_audit`) and as JSON Lines text.

The text is what `Sinks.audit` writes, `json.dumps(entry, ensure_ascii=False, default=str)`,
rendered from pieces made once per run: the keys are always the same and in the same order,
and strings are escaped by the encoder `json` itself uses for `ensure_ascii=False`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any


def json_value(value: object) -> str:
    """`value` as json.dumps writes it inside an entry."""
    if isinstance(value, str):
        return encode_basestring(value)
    if type(value) is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class ChangeKind:
    """One (code, rule, field) of correction entries, and the text between row and values."""

    code: str
    rule: str
    field: str
    middle: str  # from `, "code": ` to `"before": `


# A correction as the fast path records it: its kind, the values before and after, and those
# values as JSON text (made where the type is known, which is cheaper than asking here).
CellChange = tuple[ChangeKind, object, object, str, str]


class AuditLines:
    """Renders the correction and quarantine entries of one source."""

    def __init__(self, source: str) -> None:
        self.source = source
        head = '{"kind": "%s", "source": ' + encode_basestring(source).replace("%", "%%")
        self.correction_head = head % "correction" + ', "row": '
        self.quarantine_head = head % "quarantine" + ', "row": '

    @staticmethod
    def kind(code: str, rule: str, field: str) -> ChangeKind:
        middle = (
            f', "code": {json_value(code)}, "rule": {json_value(rule)}, '
            f'"field": {json_value(field)}, "before": '
        )
        return ChangeKind(code, rule, field, middle)

    def correction(self, row: int, identifier: str, new: str, change: CellChange) -> str:
        kind, _, _, before, after = change
        return (
            f'{self.correction_head}{row}, "identifier": {encode_basestring(identifier)}, '
            f'"new_identifier": {encode_basestring(new)}{kind.middle}{before}, '
            f'"after": {after}}}\n'
        )

    def quarantine(self, row: int, identifier: str, code: str, mfx_code: str, reason: str) -> str:
        return (
            f'{self.quarantine_head}{row}, "identifier": {encode_basestring(identifier)}, '
            f'"code": {encode_basestring(code)}, "mfx_code": {encode_basestring(mfx_code)}, '
            f'"reason": {encode_basestring(reason)}}}\n'
        )


def correction_entry(
    source: str, row: int, identifier: str, new: str, change: CellChange
) -> dict[str, Any]:
    """The entry `decide.RowDecider.correction_entry` makes for the same change."""
    kind, before, after, _, _ = change
    return {
        "kind": "correction",
        "source": source,
        "row": row,
        "identifier": identifier,
        "new_identifier": new,
        "code": kind.code,
        "rule": kind.rule,
        "field": kind.field,
        "before": before,
        "after": after,
    }


def quarantine_entry(
    source: str, row: int, identifier: str, code: str, mfx_code: str, reason: str
) -> dict[str, Any]:
    """The entry `decide.RowDecider.quarantine` makes."""
    return {
        "kind": "quarantine",
        "source": source,
        "row": row,
        "identifier": identifier,
        "code": code,
        "mfx_code": mfx_code,
        "reason": reason,
    }
