"""Cheap checks and fixes on raw CSV cells, one specialised handler per error code.

Each handler mirrors what the general path (`decide.RowDecider.decide` with the correctors) does
for the common shape of its code and reports the result to a `RowSink`; anything it does not
recognise makes it return False, and the caller decides that row on the general path. So a
handler may refuse too often, never decide differently: `valid` is stricter than
`validation.validate_record` (it accepts a subset of what that accepts), and every fix
computes exactly what the corrector computes (or calls it). Every handler first refuses a row
whose cells sent to Stripe could be past the field limits (`in_bounds`, one cheap test).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Protocol

from remediation.auditlines import AuditLines, CellChange, ChangeKind, json_value
from remediation.changes import Context
from remediation.codes import ErrorCode
from remediation.correctors import CORRECTORS, future_reason, normalize_number
from remediation.errors import Uncorrectable
from remediation.limits import MAX_TIMESTAMP_DIGITS, shown
from remediation.meters import Meter
from remediation.readers import CsvLayout
from remediation.reroute import normalized
from remediation.validation import (
    MAX_FUTURE_SECONDS,
    MAX_PAST_SECONDS,
    PLAIN_NUMBER,
    check_text,
    integer_digits,
)

Handler = Callable[[list[str]], bool]
MAX_EVENT_NAMES = 4096  # memoised event-name matches (bounded: names are usually few)
# Codes as the general path passes them on: plain strings read from the file.
_FUTURE, _PAST = ErrorCode.TIMESTAMP_IN_FUTURE.value, ErrorCode.TIMESTAMP_TOO_FAR_IN_PAST.value
_VALUE, _NO_METER = ErrorCode.INVALID_VALUE.value, ErrorCode.NO_METER.value
_CUSTOMER = ErrorCode.CUSTOMER_NOT_FOUND.value
REFUSE_PAST = "never move usage into another billing period; quarantined for review"
_THOUSANDS_INT = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
_UNITS = ((10**9, "timestamp_ns_to_s"), (10**6, "timestamp_µs_to_s"), (10**3, "timestamp_ms_to_s"))


class RowSink(Protocol):
    """Where a handler reports what it decided for a row."""

    def corrected(
        self, code: str, row: list[str], fixed: list[str], changes: tuple[CellChange, ...]
    ) -> None: ...

    def quarantined(self, code: str, row: list[str], mfx_code: str, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class MeterCells:
    """A meter, where its customer and value cells are (None: no such column), and the kinds
    of the corrections of those cells."""

    meter: Meter
    customer_at: int | None
    value_at: int | None
    value_kind: ChangeKind
    customer_kind: ChangeKind

    @classmethod
    def of(cls, meter: Meter, payload: Mapping[str, int]) -> MeterCells:
        value_kind = AuditLines.kind(_VALUE, "normalize_value", f"payload.{meter.value_key}")
        field = f"payload.{meter.customer_key}"
        customer_kind = AuditLines.kind(_CUSTOMER, "map_customer", field)
        customer_at, value_at = payload.get(meter.customer_key), payload.get(meter.value_key)
        return cls(meter, customer_at, value_at, value_kind, customer_kind)

    @property
    def usable(self) -> bool:
        """Rows of this meter can be valid with no more checks than `FastRows.valid` makes."""
        found = self.customer_at is not None and self.value_at is not None
        return found and self.meter.active and not self.meter.dimension_keys


class FastRows:
    """Handlers for one input layout, one rule set and one reference time."""

    def __init__(self, layout: CsvLayout, ctx: Context, sink: RowSink) -> None:
        assert layout.timestamp is not None and layout.event_name is not None
        self.sink, self.ctx, self.rules = sink, ctx, ctx.rules
        self.ts_at, self.event_at = layout.timestamp, layout.event_name
        payload = {key: i for i, key in layout.payload}
        self.cells = {
            m.event_name: MeterCells.of(m, payload)
            for m in ctx.index.meters
            if m.event_name  # an empty cell is no event name at all
        }
        self.usable: dict[str, tuple[int, int]] = {
            name: (c.customer_at, c.value_at)
            for name, c in self.cells.items()
            if c.usable and c.customer_at is not None and c.value_at is not None
        }
        self.ts_kinds = {
            rule: AuditLines.kind(_FUTURE, rule, "timestamp")
            for rule in (*(rule for _, rule in _UNITS), "clamp_skew")
        }
        self.event_kinds = {
            rule: AuditLines.kind(_NO_METER, rule, "event_name")
            for rule in ("alias_event_name", "match_event_name")
        }
        self.low, self.high = ctx.now - MAX_PAST_SECONDS, ctx.now + MAX_FUTURE_SECONDS
        self.precision = ctx.index.value_precision
        self._bounds(layout, ctx)
        self.event_fixes: dict[str, tuple[str, MeterCells] | None] = {}
        self.handlers: dict[str, Handler] = {
            _FUTURE: self.timestamp_in_future,
            _PAST: self.too_far_in_past,
            _VALUE: self.invalid_value,
            _NO_METER: self.no_meter,
            _CUSTOMER: self.customer_not_found,
        }

    def _bounds(self, layout: CsvLayout, ctx: Context) -> None:
        """What `in_bounds` needs: the cells sent to Stripe and the shortest length limit."""
        limits = ctx.index.limits
        assert layout.identifier is not None
        at = (layout.identifier, self.ts_at, self.event_at, *(i for i, _ in layout.payload))
        self.sent = itemgetter(*at)
        self.most = min(
            limits.max_identifier_chars,
            limits.max_event_name_chars,
            limits.max_payload_value_chars,
        )
        keys = [
            check_text("payload key", key, limits.max_payload_key_chars)
            for _, key in layout.payload
        ]
        if any(problem is not None for problem in keys):
            self.most = -1  # a payload column the general path refuses: no row is in bounds
        self.max_digits = limits.max_value_integer_digits

    def in_bounds(self, row: list[str]) -> bool:
        """No cell sent to Stripe is longer than the shortest limit or holds an unprintable
        character (the general path decides those rows, and words why)."""
        cells: tuple[str, ...] = self.sent(row)
        joined = "".join(cells)
        if not joined.isprintable():
            return False
        return len(joined) <= self.most or max(map(len, cells)) <= self.most

    def printable(self, text: str) -> bool:
        """A text a correction puts in a row is within the limits `in_bounds` tests."""
        return len(text) <= self.most and text.isprintable()

    def valid(self, row: list[str]) -> bool:
        """True only when `validate_record` finds no problem (False: not sure, or invalid)."""
        return self.in_bounds(row) and self._valid(row)

    def _valid(self, row: list[str]) -> bool:
        cells = self.usable.get(row[self.event_at])
        if cells is None or not row[cells[0]].strip():
            return False
        value = row[cells[1]]
        if len(value) > self.max_digits and integer_digits(value) > self.max_digits:
            return False
        if not (value.isdigit() and value.isascii()):
            if PLAIN_NUMBER.fullmatch(value) is None:
                return False
            precision, dot = self.precision, value.find(".")
            if precision is not None and dot >= 0 and len(value) - dot - 1 > precision:
                return False
        stamp = row[self.ts_at]
        if not stamp:
            return True  # Stripe stamps a row without a timestamp when it receives it
        if not (stamp.isdigit() and stamp.isascii()) or len(stamp) > MAX_TIMESTAMP_DIGITS:
            return False
        return self.low <= int(stamp) <= self.high

    def unclassified(self, code: str, row: list[str]) -> bool:
        """A code we have no corrector for, on a row our validation passes."""
        if code in CORRECTORS or not self.valid(row):
            return False
        reason = f"unknown code {code!r} and the row passes our validation (unclassified)"
        self.sink.quarantined(code, row, ErrorCode.UNCLASSIFIED, reason)
        return True

    # --- one handler per error code ---------------------------------------------------

    def too_far_in_past(self, row: list[str]) -> bool:
        if not self.in_bounds(row):
            return False
        self.sink.quarantined(_PAST, row, _PAST, REFUSE_PAST)
        return True

    def timestamp_in_future(self, row: list[str]) -> bool:
        """`correctors.fix_timestamp` for a timestamp of plain digits."""
        stamp, ctx, code = row[self.ts_at], self.ctx, _FUTURE
        digits = stamp.isdigit() and stamp.isascii() and len(stamp) <= MAX_TIMESTAMP_DIGITS
        if not digits or not self.in_bounds(row):
            return False
        ts, changes = int(stamp), list[CellChange]()
        if ts > self.high and self.rules.enabled("timestamp_units"):
            ts = self._from_units(ts, changes)
        if ts > self.high:
            skew = ts - ctx.now
            if skew > self.rules.policy.future_skew_seconds or not self.rules.enabled("clamp_skew"):
                self.sink.quarantined(code, row, code, future_reason(ts, ctx))
                return True
            clamp = self.ts_kinds["clamp_skew"]
            changes.append((clamp, ts, ctx.now, str(ts), str(ctx.now)))
            ts = ctx.now
        if ts < self.low or not changes:
            return False  # quarantine or a second problem: the general path words it
        fixed = row.copy()
        fixed[self.ts_at] = changes[-1][4]
        return self._corrected(code, row, fixed, tuple(changes))

    def _from_units(self, ts: int, changes: list[CellChange]) -> int:
        upper = self.ctx.now + self.rules.policy.future_skew_seconds
        for divisor, rule in _UNITS:
            seconds = ts // divisor
            if self.low <= seconds <= upper:
                changes.append((self.ts_kinds[rule], ts, seconds, str(ts), str(seconds)))
                return seconds
        return ts

    def invalid_value(self, row: list[str]) -> bool:
        """`correctors.fix_value`: thousands separators and the like; text is quarantined."""
        cells, code = self.cells.get(row[self.event_at]), _VALUE
        if cells is None or cells.value_at is None or not self.in_bounds(row):
            return False
        raw = row[cells.value_at]
        try:
            if _THOUSANDS_INT.fullmatch(raw):
                number: str | None = str(int(raw.replace(",", "")))
            else:
                number = normalize_number(raw, self.ctx.index.limits) if raw else None
        except Uncorrectable:
            return False  # past the value limits: the general path words it
        if number is None or not self.rules.enabled("normalize_value"):
            reason = f"value {shown(raw if raw else None)} is not a number"
            self.sink.quarantined(code, row, code, reason)
            return True
        if number == raw:
            reason = f"value {shown(raw)} is already a plain number; nothing to correct"
            self.sink.quarantined(code, row, code, reason)
            return True
        fixed = row.copy()
        fixed[cells.value_at] = number
        change = (cells.value_kind, raw, number, encode_basestring(raw), encode_basestring(number))
        return self._corrected(code, row, fixed, (change,))

    def no_meter(self, row: list[str]) -> bool:
        """`reroute.fix_event_name` by alias or by a unique normalised match."""
        name = row[self.event_at]
        if not self.in_bounds(row):
            return False
        if name in self.event_fixes:
            target = self.event_fixes[name]
        else:
            target = self._event_target(name)
            if len(self.event_fixes) < MAX_EVENT_NAMES:
                self.event_fixes[name] = target
        if target is None:
            return False
        rule, cells = target
        if not (row[cells.customer_at] and row[cells.value_at]):  # type: ignore[index]  # usable
            return False  # align_keys would have to rename payload keys
        fixed, after = row.copy(), cells.meter.event_name
        if not self.printable(after):
            return False
        fixed[self.event_at] = after
        change = (self.event_kinds[rule], name, after, encode_basestring(name), json_value(after))
        return self._corrected(_NO_METER, row, fixed, (change,))

    def _event_target(self, name: str) -> tuple[str, MeterCells] | None:
        rules, index = self.rules, self.ctx.index
        aliased = index.get(rules.event_names.get(name))
        if aliased is not None and rules.enabled("alias_event_name"):
            return self._usable_target("alias_event_name", aliased)
        same = [m for m in index.active() if normalized(m.event_name) == normalized(name)]
        if len(same) == 1 and rules.enabled("match_event_name"):
            return self._usable_target("match_event_name", same[0])
        return None  # fuzzy matching, or no match: the general path

    def _usable_target(self, rule: str, meter: Meter) -> tuple[str, MeterCells] | None:
        cells = self.cells.get(meter.event_name)
        return (rule, cells) if cells is not None and cells.usable else None

    def customer_not_found(self, row: list[str]) -> bool:
        """`correctors.fix_customer` through the customer map (the first candidate it tries)."""
        cells = self.cells.get(row[self.event_at])
        if cells is None or cells.customer_at is None or not self.in_bounds(row):
            return False
        raw = row[cells.customer_at]
        customers: Mapping[str, str] = self.rules.customers
        mapped = customers.get(raw) or customers.get(raw.strip())
        if not mapped or mapped == raw or not self.rules.enabled("map_customer"):
            return False
        if not self.printable(mapped):
            return False
        fixed = row.copy()
        fixed[cells.customer_at] = mapped
        change = (cells.customer_kind, raw, mapped, encode_basestring(raw), json_value(mapped))
        return self._corrected(_CUSTOMER, row, fixed, (change,))

    def _corrected(
        self, code: str, row: list[str], fixed: list[str], changes: tuple[CellChange, ...]
    ) -> bool:
        if not self._valid(fixed):
            return False  # a second problem: the general path corrects it (or words why not)
        self.sink.corrected(code, row, fixed, changes)
        return True
