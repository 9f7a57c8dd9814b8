"""The CSV fast path: rows decided once per template instead of once per row.

Most rows of a failed-records file differ from many others only in their identifier, row
number and timestamp. The engine decides the first row of each kind as usual; the outcome
becomes a `RowTemplate` keyed by the row without those cells, and the rows like it are written
from the template. Exact by construction: a template is reused only for rows whose cells are
equal apart from the identifier and a timestamp of the same category, i.e. unix seconds
inside Stripe's window, or ms/µs/ns that convert into it without clamping. In both the
timestamp only ever appears in the written row and in the unit conversion's audit entry,
which are slots. Rows whose identifier carries a generation (`-rN`), malformed rows and
outcomes a template cannot express are decided and written one by one, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import TextIO

from remediation.outcomes import Outcome, Tally
from remediation.outputs import OutputSet
from remediation.readers import CsvLayout, CsvRecords
from remediation.records import QUARANTINE_FIELDS, UsageRecord
from remediation.rules import Rules
from remediation.sinks import Sinks
from remediation.templates import CSV_SPECIAL, RowTemplate, Sample, build, csv_cell
from remediation.validation import MAX_FUTURE_SECONDS, MAX_PAST_SECONDS
from remediation.writers import getter, output_columns, record_fits

MAX_TEMPLATES = 4096
_UNITS = ((10**9, "9"), (10**6, "6"), (10**3, "3"))


@dataclass(slots=True)
class FastPlan:
    records: CsvRecords
    corrected: OutputSet
    quarantine: OutputSet
    audit: TextIO
    columns: list[str]


def plan(
    records: Iterable[UsageRecord], sinks: Sinks, columns: Iterable[str] | None, plain: bool
) -> FastPlan | None:
    """A fast plan for a CSV input written with known columns, or None (the general path)."""
    if not isinstance(records, CsvRecords) or columns is None or not plain:
        return None
    names = list(columns)
    corrected, quarantine, audit = sinks.corrected, sinks.quarantine, sinks.audit_file
    if not isinstance(corrected, OutputSet) or not isinstance(quarantine, OutputSet):
        return None
    if audit is None or sinks.on_audit is not None:
        return None
    if "identifier" not in names or "timestamp" not in names:
        return None
    return FastPlan(records, corrected, quarantine, audit, names)


@dataclass(slots=True)
class _Pending:
    corrected: list[str] = field(default_factory=list)
    quarantine: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What the fast path needs to know about the run besides its inputs and outputs."""

    source: str
    generation: int
    keep_ids: bool
    now: int
    rules: Rules
    decide: Callable[[UsageRecord], Outcome]
    emit: Callable[[Outcome], None]
    on_progress: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class _Window:
    """Unix seconds Stripe accepts, and what the timestamp corrector converts to seconds."""

    low: int
    high: int
    units_high: int | None  # None: unit conversion is turned off

    @classmethod
    def of(cls, settings: RunSettings) -> _Window:
        now, rules = settings.now, settings.rules
        units = now + rules.policy.future_skew_seconds if rules.enabled("timestamp_units") else None
        return cls(now - MAX_PAST_SECONDS, now + MAX_FUTURE_SECONDS, units)

    def converted(self, value: int) -> tuple[str, str | None]:
        """(category, seconds) of a timestamp beyond the window, as `fix_timestamp` sees it."""
        if self.units_high is not None:
            for divisor, category in _UNITS:
                seconds = value // divisor
                if self.low <= seconds <= self.units_high:
                    return (category, str(seconds)) if seconds <= self.high else ("", None)
        return "", None


def run(fast: FastPlan, settings: RunSettings, tally: Tally) -> None:
    """Remediate every row of `fast.records` (the engine's `_run_records`, batched)."""
    runner = _Runner(fast, settings, tally)
    for layout, rows in fast.records.row_batches():
        runner.batch(layout, rows)
    runner.finish()


class _Runner:
    def __init__(self, fast: FastPlan, settings: RunSettings, tally: Tally) -> None:
        self.fast, self.settings, self.tally = fast, settings, tally
        self.window = _Window.of(settings)
        self.suffix = f"-r{max(settings.generation, 1)}"
        self.templates: dict[tuple[str, ...], RowTemplate] = {}
        self.pending = _Pending()
        self.number = self.misses = 0
        self.enabled = True
        names = output_columns(fast.columns)
        self.getters = [getter(name) for name in names]
        self.positions = (names.index("identifier"), names.index("timestamp"))
        self.fits = frozenset(fast.columns)

    def batch(self, layout: CsvLayout, rows: list[list[str]]) -> None:
        if not self.enabled or layout.identifier is None or layout.timestamp is None:
            return self.one_by_one(layout, rows)
        templates, window, pending = self.templates, self.window, self.pending
        corrected, quarantine, audit = pending.corrected, pending.quarantine, pending.audit
        id_at, ts_at, width = layout.identifier, layout.timestamp, len(layout.header)
        suffix, keep, number = self.suffix, self.settings.keep_ids, self.number
        low, high = window.low, window.high
        special, encode = CSV_SPECIAL.search, encode_basestring
        for at, row in enumerate(rows):
            number += 1
            if len(row) != width or not row[id_at] or "-r" in row[id_at]:
                self.number = number
                self.slow(layout, row)  # malformed, or an identifier derive_identifier must see
                if not self.enabled:
                    return self.one_by_one(layout, rows[at + 1 :], len(rows))
                continue
            ident, stamp = row[id_at], row[ts_at]
            category, seconds = "", None
            if stamp.isdigit() and stamp[0] != "0" and stamp.isascii():
                value = int(stamp)
                if value > high:
                    category, seconds = window.converted(value)
                elif value >= low:
                    category, seconds = "s", stamp
            row[id_at] = ""
            if category:
                row[ts_at] = ""
            row.append(category)
            key = tuple(row)
            template = templates.get(key)
            if template is None:
                del row[-1]
                row[id_at], row[ts_at] = ident, stamp
                self.number = number
                template = self.miss(layout, row, key, Sample(ident, stamp, seconds))
                if template is None:
                    if not self.enabled:
                        return self.one_by_one(layout, rows[at + 1 :], len(rows))
                    continue
            template.hits += 1
            new = ident if keep else ident + suffix
            if template.quarantine:
                cid = ident if special(ident) is None else csv_cell(ident)
                quarantine.append(template.line.format(cid, stamp))
            else:
                cid = new if special(new) is None else csv_cell(new)
                written = seconds if template.converted else stamp
                corrected.append(template.line.format(cid, written))
            if template.audit:
                audit.append(
                    template.audit.format(
                        None, None, number, encode(ident), encode(new), stamp, seconds
                    )
                )
        self.number = number
        self.flush()
        self.progress(len(rows))
        if len(templates) >= MAX_TEMPLATES and self.misses * 2 > number:
            self.drop_templates()  # rows too varied for templates to pay: decide one by one

    def miss(
        self, layout: CsvLayout, row: list[str], key: tuple[str, ...], sample: Sample
    ) -> RowTemplate | None:
        """Decide the row; keep its template, or write it as usual when it gets none."""
        self.misses += 1
        outcome = self.settings.decide(layout.record(self.number, row))
        template = None
        if len(self.templates) < MAX_TEMPLATES and record_fits(outcome.record, self.fits):
            template = build(outcome, sample, self.getters, self.positions, QUARANTINE_FIELDS)
        if template is None:
            self.write_one(outcome)
            return None
        self.templates[key] = template
        return template

    def slow(self, layout: CsvLayout, row: list[str]) -> None:
        self.write_one(self.settings.decide(layout.record(self.number, row)))

    def one_by_one(self, layout: CsvLayout, rows: list[list[str]], batch: int = 0) -> None:
        """Decide and write `rows` one at a time (the rest of a batch of `batch` rows)."""
        for row in rows:
            self.number += 1
            self.slow(layout, row)
        self.progress(batch or len(rows))

    def write_one(self, outcome: Outcome) -> None:
        self.flush()
        self.tally.add(outcome)
        self.settings.emit(outcome)
        fast = self.fast
        if self.enabled and not (fast.corrected.takes_lines() and fast.quarantine.takes_lines()):
            self.enabled = False  # an output opened with other columns: no more templates

    def flush(self) -> None:
        pending = self.pending
        if pending.corrected:
            self.fast.corrected.write_lines(pending.corrected)
            pending.corrected.clear()
        if pending.quarantine:
            self.fast.quarantine.write_lines(pending.quarantine)
            pending.quarantine.clear()
        if pending.audit:
            self.fast.audit.write("".join(pending.audit))
            pending.audit.clear()

    def progress(self, rows: int) -> None:
        every, report = 65536, self.settings.on_progress
        if report is not None and self.number // every > (self.number - rows) // every:
            report(self.number // every * every)

    def drop_templates(self) -> None:
        self.enabled = False
        for template in self.templates.values():
            self.tally.add(template.outcome, template.hits)
        self.templates.clear()

    def finish(self) -> None:
        self.flush()
        self.drop_templates()
