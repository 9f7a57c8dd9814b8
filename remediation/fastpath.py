"""The CSV fast path: every row decided on its raw cells, written in batches.

Column indexes are resolved once from the header. Each row goes to the handler of its error
code (`fastrows`), which checks and fixes the cells it needs and reports the outcome here;
the output row is the input row projected onto the output columns, with the derived
identifier, and goes out through `csv.writer.writerows` in chunks; audit lines come from
pre-rendered pieces (`auditlines`). A row a handler does not recognise (malformed, without an
identifier or with one lineage says we wrote, an unusual code or value) is decided by the
general path (`decide` + `emit`), after the pending rows are written, so the outputs keep
input order and are byte-identical to the general path's (tests/unit/remediation/
test_fastpath.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol, TextIO

from remediation.auditlines import AuditLines, CellChange, correction_entry, quarantine_entry
from remediation.changes import Context
from remediation.codes import KNOWN_CODES, ErrorCode
from remediation.fastrows import FastRows
from remediation.identifiers import Identifiers
from remediation.outcomes import Outcome, Tally
from remediation.outputs import OutputSet
from remediation.ranges import RangeRows
from remediation.readers import CsvLayout, CsvRecords
from remediation.records import UsageRecord
from remediation.sinks import AuditSink, Sinks
from remediation.writers import getter, output_columns, record_object

PROGRESS_EVERY = 65536
Projection = Callable[[list[str]], Sequence[str]]  # an input row's output cells


class RowSource(Protocol):
    """CSV rows in batches: `CsvRecords`, or one byte range of a file (`ranges.RangeRows`)."""

    def row_batches(self, size: int = ...) -> Iterator[tuple[CsvLayout, list[list[str]]]]: ...


@dataclass(slots=True)
class FastPlan:
    records: RowSource
    corrected: OutputSet
    quarantine: OutputSet
    audit: TextIO
    on_audit: AuditSink | None
    columns: list[str]


def plan(
    records: Iterable[UsageRecord] | RowSource, sinks: Sinks, columns: Iterable[str] | None
) -> FastPlan | None:
    """A fast plan for a CSV input written with known columns, or None (the general path)."""
    if not isinstance(records, CsvRecords | RangeRows) or columns is None:
        return None
    corrected, quarantine, audit = sinks.corrected, sinks.quarantine, sinks.audit_file
    if not isinstance(corrected, OutputSet) or not isinstance(quarantine, OutputSet):
        return None
    if audit is None:
        return None
    return FastPlan(records, corrected, quarantine, audit, sinks.on_audit, list(columns))


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What the fast path needs to know about the run besides its inputs and outputs."""

    source: str
    generation: int
    ids: Identifiers
    rejected: bool  # every row was rejected: valid rows are re-sent too (see `decide`)
    ctx: Context
    decide: Callable[[UsageRecord], Outcome]
    emit: Callable[[Outcome], None]
    on_progress: Callable[[int], None] | None = None
    first_row: int = 1  # number of the first row (a later byte range of a file: see `parallel`)


def run(fast: FastPlan, settings: RunSettings, tally: Tally) -> None:
    """Remediate every row of `fast.records` (what the engine's `_run_records` does)."""
    runner: _Runner | None = None
    for layout, rows in fast.records.row_batches():
        if runner is None:
            runner = _Runner(fast, settings, tally, layout)
        runner.batch(rows)
    if runner is not None:
        runner.finish()


def projection(layout: CsvLayout, columns: Sequence[str]) -> list[int] | None:
    """Which input cell each output column shows, as the writer's getters would; None when
    the output columns are not simply input cells (duplicate or missing columns)."""
    width = len(layout.header)
    probe = [f"\x00{i}" for i in range(width)]
    record = layout.record(0, probe)
    where = {cell: i for i, cell in enumerate(probe)}
    picks = [where.get(getter(name)(record)) for name in output_columns(columns)]
    keys = [key for _, key in layout.payload] + [name for _, name in layout.extra]
    used = {i for i, _ in layout.payload} | {i for i, _ in layout.extra}
    indexes = [i for i in picks if i is not None]
    if len(indexes) != len(picks) or len(set(indexes)) != len(indexes) or len(indexes) < 2:
        return None
    if len(set(keys)) != len(keys) or not used <= set(indexes):
        return None  # the record would keep another cell, or not fit these columns
    return indexes


def projector(indexes: list[int]) -> Projection:
    """The output cells of a row (a slice when the output is a prefix of the input)."""
    if indexes == list(range(len(indexes))):
        return itemgetter(slice(0, len(indexes)))
    return itemgetter(*indexes)


def usable(layout: CsvLayout) -> bool:
    """Whether rows of this layout can be decided on their cells at all."""
    core = layout.identifier, layout.timestamp, layout.event_name
    return None not in core and (layout.simple_errors is not None or not layout.errors)


@dataclass(slots=True)
class _Counts:
    valid: int = 0
    valid_kept: int = 0
    corrections: int = 0
    corrected: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    unclassified: dict[str, int] = field(default_factory=dict)

    def into(self, tally: Tally) -> None:
        tally.count("valid", None, self.valid, 0, 0)
        tally.valid_kept += self.valid_kept
        for code, rows in self.corrected.items():
            tally.count("corrected", code, rows, 0, 0)
        for code, rows in self.quarantined.items():
            tally.count("quarantined", code, rows, 0, self.unclassified.get(code, 0))
        tally.count("valid", None, 0, self.corrections, 0)


class _Runner:
    """Decides rows (see the module docstring); implements `fastrows.RowSink`."""

    def __init__(self, fast: FastPlan, settings: RunSettings, tally: Tally, layout: CsvLayout):
        self.fast, self.settings, self.tally, self.layout = fast, settings, tally, layout
        self.number = settings.first_row - 1
        self.counts = _Counts()
        self.lines = AuditLines(settings.source)
        self.ids, self.keep_ids = settings.ids, settings.ids.keep
        self.ours = settings.ids.ancestors  # rows lineage says we wrote: the general path
        # the plain derived identifier, unless an original could clash (`Identifiers.fast_new`)
        self.suffix, self.plain_up_to = settings.ids.suffix, settings.ids.longest_plain
        self.plain_only = not settings.ids.reserved
        self.pending: tuple[list[list[str]], list[list[str]], list[str]] = ([], [], [])
        picks = projection(layout, fast.columns)
        self.enabled = picks is not None and usable(layout)
        width = len(layout.header)
        self.project = projector(picks or [0, 1])  # input rows -> corrected rows
        self.project_notes = itemgetter(*(picks or [0, 1]), width, width + 1)  # quarantine
        self.rows = FastRows(layout, settings.ctx, self) if self.enabled else None
        self.id_at = layout.identifier or 0
        simple: tuple[int | None, int | None] = layout.simple_errors or (None, None)
        self.code_at, self.message_at = simple

    def batch(self, rows: list[list[str]]) -> None:
        # The hot loop, kept in one piece (locals, one handler call per row): it runs per row.
        if not self.enabled or self.rows is None:
            return self.one_by_one(rows)
        width, id_at = len(self.layout.header), self.id_at
        code_at, message_at = self.code_at, self.message_at
        handlers, valid, ours = self.rows.handlers, self.rows.valid, self.ours
        for at, row in enumerate(rows):
            self.number += 1
            if len(row) == width and row[id_at] and (not ours or row[id_at] not in ours):
                code = row[code_at] if code_at is not None else ""
                if code:
                    handler = handlers.get(code)
                    if handler is not None and handler(row):
                        continue
                    if handler is None and self.odd_code(code, row):
                        continue
                elif (message_at is None or not row[message_at]) and valid(row):
                    self.valid(row)
                    continue
            self.general(row)
            if not self.enabled:
                return self.one_by_one(rows[at + 1 :], len(rows))
        self.flush()
        self.progress(len(rows))

    def odd_code(self, code: str, row: list[str]) -> bool:
        """A code cell that is not exactly a handler's code: normalise it as the reader does."""
        assert self.rows is not None
        arrived = code.strip().lower()
        handler = self.rows.handlers.get(arrived)
        if handler is not None:
            return handler(row)
        return bool(arrived) and self.rows.unclassified(arrived, row)

    # --- RowSink -----------------------------------------------------------------------

    def valid(self, row: list[str]) -> None:
        """A row without error information that passes validation."""
        self.counts.valid += 1
        if not self.settings.rejected:
            self.counts.valid_kept += 1  # never rejected: it may have been billed, never re-sent
            return
        if not self.keep_ids:
            row[self.id_at] = self.new_identifier(row[self.id_at])
        self.pending[0].append(row)

    def corrected(
        self, code: str, row: list[str], fixed: list[str], changes: tuple[CellChange, ...]
    ) -> None:
        ident = row[self.id_at]
        new = ident if self.keep_ids else self.new_identifier(ident)
        fixed[self.id_at] = new
        self.pending[0].append(fixed)
        counts = self.counts
        counts.corrected[code] = counts.corrected.get(code, 0) + 1
        counts.corrections += len(changes)
        lines, number, on_audit = self.pending[2], self.number, self.fast.on_audit
        for change in changes:
            lines.append(self.lines.correction(number, ident, new, change))
            if on_audit is not None:
                on_audit(correction_entry(self.lines.source, number, ident, new, change))

    def quarantined(self, code: str, row: list[str], mfx_code: str, reason: str) -> None:
        ident, number = row[self.id_at], self.number
        self.pending[1].append([*row, mfx_code, reason])
        counts = self.counts
        counts.quarantined[code] = counts.quarantined.get(code, 0) + 1
        if code not in KNOWN_CODES or mfx_code == ErrorCode.UNCLASSIFIED:
            counts.unclassified[code] = counts.unclassified.get(code, 0) + 1
        self.pending[2].append(self.lines.quarantine(number, ident, code, mfx_code, reason))
        if self.fast.on_audit is not None:
            entry = quarantine_entry(self.lines.source, number, ident, code, mfx_code, reason)
            record = record_object(self.layout.record(number, row))  # the row in full
            entry["record"] = {**record, "mfx_code": mfx_code, "mfx_reason": reason}
            self.fast.on_audit(entry)

    def new_identifier(self, identifier: str) -> str:
        if self.plain_only and len(identifier) <= self.plain_up_to:
            return identifier + self.suffix  # what `Identifiers.fast_new` gives, inline
        return self.ids.fast_new(identifier)

    # --- the general path and output -----------------------------------------------------

    def general(self, row: list[str]) -> None:
        """Decide and write one row as `engine._run_records` does."""
        self.flush()
        outcome = self.settings.decide(self.layout.record(self.number, row))
        self.tally.add(outcome)
        self.settings.emit(outcome)
        fast = self.fast
        if self.enabled and not (fast.corrected.takes_rows() and fast.quarantine.takes_rows()):
            self.enabled = False  # an output opened with other columns: no more fast rows

    def one_by_one(self, rows: list[list[str]], batch: int = 0) -> None:
        """Decide and write `rows` on the general path (the rest of a batch of `batch` rows)."""
        for row in rows:
            self.number += 1
            self.general(row)
        self.progress(batch or len(rows))

    def flush(self) -> None:
        corrected, quarantine, audit = self.pending
        if corrected:
            self.fast.corrected.write_rows(list(map(self.project, corrected)))
            corrected.clear()
        if quarantine:
            self.fast.quarantine.write_rows(list(map(self.project_notes, quarantine)))
            quarantine.clear()
        if audit:
            self.fast.audit.write("".join(audit))
            audit.clear()

    def progress(self, rows: int) -> None:
        report, number = self.settings.on_progress, self.number
        if report is not None and number // PROGRESS_EVERY > (number - rows) // PROGRESS_EVERY:
            report(number // PROGRESS_EVERY * PROGRESS_EVERY)

    def finish(self) -> None:
        self.flush()
        self.counts.into(self.tally)
        self.counts = _Counts()
