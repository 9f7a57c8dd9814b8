"""Row templates: what the engine decided for one CSV row, pre-rendered for rows like it.

A template holds the row's output line and audit lines as `str.format` patterns. The slots
are the only parts that may differ between rows with the same template (see `fastpath`):
  {0} identifier cell written   {1} timestamp cell written   {2} row number
  {3} identifier (JSON)         {4} new identifier (JSON)    {5} timestamp as read
  {6} timestamp converted to seconds
A decision that cannot be expressed that way gets no template (the caller writes it as usual).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from remediation.outcomes import Outcome
from remediation.writers import Getter, cell

_SLOTS = tuple(chr(0xE000 + i) for i in range(7))  # private-use characters stand for slots
CSV_SPECIAL = re.compile(r'[,"\r\n]')


@dataclass(slots=True)
class RowTemplate:
    outcome: Outcome  # of the row the template was made from; counted `hits` times
    quarantine: bool
    line: str
    audit: str
    converted: bool  # the timestamp written is the converted one ({6}), not the one read
    hits: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    """The row a template is made from: its identifier and timestamp cells."""

    identifier: str
    timestamp: str
    seconds: str | None  # timestamp in seconds when the timestamp is a slot, else None


def csv_cell(text: str) -> str:
    """`text` as csv.writer (excel dialect, minimal quoting) writes a cell."""
    if CSV_SPECIAL.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


def build(
    outcome: Outcome,
    sample: Sample,
    getters: Sequence[Getter],
    positions: tuple[int, int],
    annotations: Sequence[str],
) -> RowTemplate | None:
    """The template of `outcome`, or None when its rows cannot all be written from one."""
    quarantine = outcome.notes is not None
    cells = [get(outcome.record) for get in getters]
    if quarantine:
        notes = outcome.notes or {}
        cells += [cell(notes.get(name)) for name in annotations]
    line = _line(cells, positions, sample)
    audit = _audit(outcome.audit, sample)
    if line is None or audit is None:
        return None
    converted = cells[positions[1]] != sample.timestamp
    return RowTemplate(outcome, quarantine, line, audit, converted)


def _line(cells: list[str], positions: tuple[int, int], sample: Sample) -> str | None:
    id_at, ts_at = positions
    if any(slot in text for text in cells for slot in _SLOTS):
        return None
    cells[id_at] = _SLOTS[0]
    if sample.seconds is not None:
        if cells[ts_at] not in (sample.timestamp, sample.seconds):
            return None
        cells[ts_at] = _SLOTS[1]
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return _pattern(buffer.getvalue(), sample)


def _audit(entries: list[dict[str, Any]], sample: Sample) -> str | None:
    lines = []
    for entry in entries:
        text = json.dumps(entry, ensure_ascii=False, default=str)
        if any(slot in text for slot in _SLOTS):
            return None
        slotted = dict(entry, row=_SLOTS[2], identifier=_SLOTS[3])
        if "new_identifier" in entry:
            slotted["new_identifier"] = _SLOTS[4]
        if sample.seconds is not None and entry.get("field") == "timestamp":
            if (entry["before"], entry["after"]) != (int(sample.timestamp), int(sample.seconds)):
                return None
            slotted.update(before=_SLOTS[5], after=_SLOTS[6])
        lines.append(json.dumps(slotted, ensure_ascii=False, default=str) + "\n")
    return _pattern("".join(lines), sample)


def _pattern(text: str, sample: Sample) -> str | None:
    """A format pattern from text with slot characters; None if a slot value is left in it."""
    literal = text
    for slot in _SLOTS:
        literal = literal.replace(f'"{slot}"', "").replace(slot, "")
    values = [sample.timestamp, sample.seconds] if sample.seconds is not None else []
    if len(sample.identifier) >= 4:
        values.append(sample.identifier)
    if any(value and value in literal for value in values):
        return None  # the row's own identifier or timestamp is in a literal part (a reason)
    pattern = text.replace("{", "{{").replace("}", "}}")
    for number, slot in enumerate(_SLOTS):
        pattern = pattern.replace(f'"{slot}"', f"{{{number}}}").replace(slot, f"{{{number}}}")
    return pattern
