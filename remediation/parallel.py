"""Large CSV inputs remediated on two cores: two byte ranges, two processes, one result.

Each process runs the fast path over its range (`ranges.RangeRows`) into its own temporary
files: one corrected and one quarantine body (never split) and the audit lines. The parent
then appends them in input order to the run's own outputs, which split parts at the same rows
as a single pass would (`OutputSet.append_body`), and adds up the counts, so the result is
byte-identical to the single-process one (tests/unit/remediation/test_parallel.py). Whenever
that cannot be guaranteed cheaply (a quoted newline, a blank line in the first half, a row
needing another output layout, an output that could reach the size limit) the caller runs
the single pass instead; only the time spent is lost.

Used only where nothing needs the parent process per row: no `on_audit` callback, no
customer directory, no progress reports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from remediation import fastpath, ranges
from remediation.changes import Context
from remediation.decide import RowDecider
from remediation.filetypes import FileFormat
from remediation.identifiers import Lineage
from remediation.meters import Meter
from remediation.outcomes import Tally
from remediation.outputs import OutputSet
from remediation.readers import CsvRecords
from remediation.rules import Rules
from remediation.sinks import Sinks
from remediation.validation import MeterIndex

MIN_ROWS = 200_000  # below this, starting processes and merging costs more than it saves
# The first process starts at once, the second after the parent has counted the first's rows
# (about 1/10 of the time a process needs for them): the first gets a little more.
FIRST_SHARE = 0.52
UNLIMITED = 1 << 62
HEADER_ROOM = 1 << 16  # bytes of a header line, generously


@dataclass(frozen=True, slots=True)
class RunSpec:
    """Everything a process needs to remediate its range (picklable)."""

    source: str
    generation: int
    keep_ids: bool
    meters: tuple[Meter, ...]
    rules: Rules
    now: int
    columns: tuple[str, ...]
    lineage: Lineage
    rejected: bool


@dataclass(frozen=True, slots=True)
class Job:
    spec: RunSpec
    path: Path
    span: tuple[int, int]
    first_row: int
    header: tuple[str, ...]
    delimiter: str
    out_dir: Path


@dataclass(frozen=True, slots=True)
class Part:
    """What one process wrote: (path, rows) per output kind, or None when it wrote nothing."""

    rows: int
    tally: Tally
    corrected: tuple[Path, int] | None
    quarantine: tuple[Path, int] | None
    audit: Path
    single_layout: bool


def remediate_halves(
    records: CsvRecords, sinks: Sinks, spec: RunSpec, tally: Tally, work_dir: Path
) -> bool:
    """Remediate `records` in two processes into `sinks`; False (nothing written) if unsafe."""
    path = records.path()
    if path is None or ranges.estimated_rows(path) < MIN_ROWS:
        return False
    cut = ranges.plan_cut(path, records.delimiter, records.header, FIRST_SHARE)
    if cut is None:
        return False
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".mfx-halves-") as tmp:
        job = Job(spec, path, (cut.start, cut.middle), 1, cut.header, records.delimiter, Path(tmp))
        parts = _run_jobs(job, cut)
        if parts is None or not _mergeable(parts, sinks):
            return False
        _merge(parts, sinks, tally)
    return True


def _run_jobs(first: Job, cut: ranges.Cut) -> list[Part] | None:
    """Both halves; the second starts once the parent has counted the rows of the first."""
    with ProcessPoolExecutor(2) as pool:
        futures = [pool.submit(remediate_range, replace(first, out_dir=first.out_dir / "1"))]
        rows = ranges.count_rows(first.path, cut.start, cut.middle)
        if rows is not None:
            second = replace(first, span=(cut.middle, cut.end), first_row=rows + 1)
            futures.append(
                pool.submit(remediate_range, replace(second, out_dir=first.out_dir / "2"))
            )
        try:
            parts = [future.result() for future in futures]
        except (ranges.SplitUnsafe, UnicodeDecodeError):
            return None  # the single pass reads the file again and words any error
    if rows is None or parts[0].rows != rows:
        return None
    return parts


def _mergeable(parts: list[Part], sinks: Sinks) -> bool:
    if not all(part.single_layout for part in parts):
        return False
    for kind in ("corrected", "quarantine"):
        output = getattr(sinks, kind)
        bodies = [getattr(part, kind) for part in parts]
        size = sum(body[0].stat().st_size for body in bodies if body is not None)
        if not isinstance(output, OutputSet) or 3 * (size + HEADER_ROOM) > output.max_bytes:
            return False  # the size limit could split a part: only a single pass does that
    return True


def _merge(parts: list[Part], sinks: Sinks, tally: Tally) -> None:
    """The first part's files become the outputs' first files; the others are appended."""
    outputs = (("corrected", sinks.corrected), ("quarantine", sinks.quarantine))
    for number, part in enumerate(parts):
        for kind, output in outputs:
            body: tuple[Path, int] | None = getattr(part, kind)
            assert isinstance(output, OutputSet)
            if body is None:
                continue
            if not output.layouts and body[1] <= output.max_rows:
                output.adopt(*body)
                continue
            with open(body[0], "rb") as stream:
                stream.readline()  # the header
                output.append_body(stream, body[1])
        if number == 0:
            sinks.adopt_audit(part.audit)
        else:
            sinks.append_audit(part.audit)
        tally.merge(part.tally)


def remediate_range(job: Job) -> Part:
    """In a worker process: the fast path over one byte range, into `job.out_dir`."""
    spec = job.spec
    rules = spec.rules
    index = MeterIndex(
        spec.meters, value_precision=rules.value_precision, limits=rules.policy.limits
    )
    ctx = Context(index, spec.rules, spec.now)
    decider = RowDecider(
        spec.source, ctx, spec.generation, spec.keep_ids, spec.lineage, spec.rejected
    )
    sinks = Sinks(
        job.out_dir,
        spec.source,
        FileFormat.CSV,
        spec.generation,
        spec.columns,
        True,
        UNLIMITED,
        None,
        UNLIMITED,
    )
    rows = ranges.RangeRows(job.path, job.span, job.header, job.delimiter)
    plan = fastpath.plan(rows, sinks, spec.columns)
    assert plan is not None
    settings = fastpath.RunSettings(
        spec.source,
        spec.generation,
        decider.ids,
        spec.rejected,
        ctx,
        decider.decide,
        sinks.emit,
        first_row=job.first_row,
    )
    fastpath.run(plan, settings, decider.tally)
    return _close(sinks, rows.rows, decider.tally)


def _close(sinks: Sinks, rows: int, tally: Tally) -> Part:
    assert isinstance(sinks.corrected, OutputSet) and isinstance(sinks.quarantine, OutputSet)
    assert sinks.audit_file is not None
    corrected, quarantine = sinks.corrected.close_parts(), sinks.quarantine.close_parts()
    sinks.audit_file.close()
    single = all(len(layouts) <= 1 for layouts in (corrected, quarantine))
    first = _only(corrected), _only(quarantine)
    return Part(rows, tally, *first, sinks.audit_tmp, single)


def _only(layouts: Sequence[list[tuple[Path, int]]]) -> tuple[Path, int] | None:
    return layouts[0][0] if layouts and layouts[0] else None
