"""Where each field of a record sits in a CSV row (`CsvLayout`), computed once from the header,
and a CSV row read into a `UsageRecord` by it (`readers` reads the rows).

CSV convention (assumed, Stripe does not say): an empty `payload_<key>` cell means the key is
absent, and an empty identifier/timestamp/event_name cell means none was given. An ambiguous
header (a column named twice) fails the whole file: which column Stripe should bill is
unknowable, so nothing is guessed.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

from remediation.errors import UnreadableFile
from remediation.records import (
    ERROR_FIELDS,
    MFX_PREFIX,
    PAYLOAD_PREFIX,
    UsageRecord,
    resolve_error,
    unnamed_key,
)


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Where each field of a record sits in a CSV row (computed once from the header)."""

    header: tuple[str, ...]
    identifier: int | None
    timestamp: int | None
    event_name: int | None
    payload: tuple[tuple[int, str], ...]
    extra: tuple[tuple[int, str], ...]
    errors: tuple[tuple[int, str], ...]
    simple_errors: tuple[int, int | None] | None = None  # (error_code, error_message) indexes

    @staticmethod
    def names_usage(name: str) -> bool:
        """Whether a header name is a usage file's own column (core, payload or error)."""
        low = name.strip().lower()
        return low in _CASELESS or (low.startswith(PAYLOAD_PREFIX) and low != PAYLOAD_PREFIX)

    @classmethod
    def from_header(cls, header: Sequence[str]) -> CsvLayout:
        names = tuple(name.strip() for name in header)
        _refuse_invisible(names)
        lowered = [name.lower() for name in names]
        _refuse_duplicates(names, lowered)
        core = {
            k: (lowered.index(k) if k in lowered else None)
            for k in ("identifier", "timestamp", "event_name")
        }
        payload, extra, errors = _other_columns(names, lowered, core)
        layout = cls(
            names,
            core["identifier"],
            core["timestamp"],
            core["event_name"],
            payload,
            extra,
            errors,
        )
        return replace(layout, simple_errors=_error_columns(layout))

    def _read_errors(self, rec: UsageRecord, row: Sequence[str]) -> None:
        simple = self.simple_errors
        if simple is None:
            rec.error_code, rec.error_message = resolve_error({k: row[i] for i, k in self.errors})
            return
        code = row[simple[0]].strip().lower()
        message = row[simple[1]].strip() if simple[1] is not None else ""
        rec.error_code, rec.error_message = code or None, message or None

    def columns(self) -> list[str]:
        """Output column names in input order: canonical core names, no error columns."""
        names = {
            self.identifier: "identifier",
            self.timestamp: "timestamp",
            self.event_name: "event_name",
        }
        names.update({i: PAYLOAD_PREFIX + key for i, key in self.payload})
        names.update({i: name for i, name in self.extra})
        return [names[i] for i in range(len(self.header)) if i in names]

    def record(self, number: int, row: Sequence[str]) -> UsageRecord:
        width = len(self.header)
        malformed = None
        if len(row) != width:
            malformed = ragged_reason(row, width)
            row = [*row[:width], *([""] * (width - len(row)))]
        rec = UsageRecord(
            number,
            _cell(row, self.identifier),
            _cell(row, self.timestamp),
            _cell(row, self.event_name),
            {key: row[i] for i, key in self.payload if row[i] != ""},
            {name: row[i] for i, name in self.extra},
            malformed=malformed,
        )
        if self.errors:
            self._read_errors(rec, row)
        return rec


_Placed = tuple[tuple[int, str], ...]


def _other_columns(
    names: tuple[str, ...], lowered: list[str], core: dict[str, int | None]
) -> tuple[_Placed, _Placed, _Placed]:
    """The header's columns other than the core ones, by place: payload keys, other columns
    (each unnamed column a key of its own, the first one ''), error fields."""
    payload: list[tuple[int, str]] = []
    extra: list[tuple[int, str]] = []
    errors: list[tuple[int, str]] = []
    unnamed = 0
    for i, (name, low) in enumerate(zip(names, lowered, strict=True)):
        if low in core and core[low] == i:
            continue
        if low.startswith(PAYLOAD_PREFIX) and len(low) > len(PAYLOAD_PREFIX):
            payload.append((i, name[len(PAYLOAD_PREFIX) :]))
        elif low in ERROR_FIELDS:
            errors.append((i, low))
        elif not name:  # each unnamed column its own key, the first one ''
            extra.append((i, unnamed_key(i + 1) if unnamed else name))
            unnamed += 1
        elif not name.startswith(MFX_PREFIX):  # our notes of an earlier run: not the row's
            extra.append((i, name))
    return tuple(payload), tuple(extra), tuple(errors)


def _refuse_invisible(names: Sequence[str]) -> None:
    """A column name that is a core, error or payload column's but for a control or an
    invisible (format) character fails the file: `timestamp` followed by a zero-width space
    (U+200B) or a NUL was no `timestamp` column, so every row was read without one and
    re-sent so (Stripe stamps a row of no timestamp with its arrival: usage of 40 days ago
    moved into this period). Which column was meant is not guessed. A payload key's own
    control characters are refused row by row (`validation`); other columns are the row's."""
    for at, name in enumerate(names, 1):
        if name.isprintable():  # the common case, at once
            continue
        found = [c for c in name if unicodedata.category(c) in _INVISIBLE]
        seen = "".join(c for c in name if c not in found).strip().lower()
        if not found or name.lower().startswith(PAYLOAD_PREFIX):
            continue
        if seen in _CASELESS or seen.startswith(PAYLOAD_PREFIX):
            raise UnreadableFile(
                f"ambiguous header: column {at} {name!r} is {seen!r} but for the invisible "
                f"character U+{ord(found[0]):04X}; nothing guessed"
            )


def _refuse_duplicates(names: Sequence[str], lowered: Sequence[str]) -> None:
    """A column named twice (`payload_value` twice): which one Stripe should bill is unknowable,
    so the whole file fails with the reason. Core and error names are case-insensitive. Our
    own `mfx_` notes are not read at all: named twice (a quarantine file written from a
    quarantine file fed back, before they were dropped on reading), they are no ambiguity."""
    seen: dict[str, int] = {}
    for at, (name, low) in enumerate(zip(names, lowered, strict=True), 1):
        # a payload column is its key: its prefix is read in any case (`PAYLOAD_value` is
        # `value` as `payload_value` is), its key as spelt (`payload_Value` is another key)
        payload = low.startswith(PAYLOAD_PREFIX) and low not in _CASELESS
        key = PAYLOAD_PREFIX + name[len(PAYLOAD_PREFIX) :] if payload else low
        if key in seen and name and not name.startswith(MFX_PREFIX):
            raise UnreadableFile(
                f"ambiguous header: column {name!r} appears twice (columns {seen[key]} and {at}); "
                "nothing guessed"
            )
        seen.setdefault(key, at)


_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})  # controls, formats, line/paragraph separators
_CASELESS = frozenset({"identifier", "timestamp", "event_name", *ERROR_FIELDS})


def _error_columns(layout: CsvLayout) -> tuple[int, int | None] | None:
    """(code index, message index) when the file has the common error_code/error_message pair."""
    names = dict((name, i) for i, name in layout.errors)
    if "error_code" in names and set(names) <= {"error_code", "error_message"}:
        return names["error_code"], names.get("error_message")
    return None


def ragged_reason(row: Sequence[str], width: int) -> str:
    """Why a row of the wrong width is malformed. The row keeps the header's width (its cells
    under their columns, as read), so the cells past it are in the reason, as a JSON list:
    a quarantined row is kept in full (an unquoted `1,234` leaves `234` past the header)."""
    reason = f"row has {len(row)} fields, header has {width}"
    if len(row) > width:
        reason += "; fields past the header: " + json.dumps(row[width:], ensure_ascii=False)
    return reason + _line_breaks(row)


def _line_breaks(row: Sequence[str]) -> str:
    """What a ragged row says when a quote left open has read the next lines into it."""
    breaks = sum(cell.count("\n") for cell in row)
    if not breaks:
        return ""
    return (
        f"; a quoted field holds {breaks} line break(s): a quote left open swallowed the "
        "lines after it"
    )


def _cell(row: Sequence[str], index: int | None) -> str | None:
    if index is None:
        return None
    value = row[index]
    return value if value != "" else None
