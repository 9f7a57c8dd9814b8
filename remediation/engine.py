"""One remediation pass over one input: classify, correct, write corrected + quarantine + audit.

Invariants, checked at the end of every run (ConservationError otherwise): rows in = valid +
corrected + quarantined, and every row went to exactly one output, except the valid rows of an
input that was not rejected as a whole, which go to none (never re-sent: see `decide`). Same
input, rules, lineage and `now` give byte-identical files.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa

from remediation.changes import Context
from remediation.core.columns import Ahead, Batch, record_batches
from remediation.core.csvbatch import csv_batch
from remediation.core.csvout import CsvOut
from remediation.core.decide import BatchDecider, Decided
from remediation.core.jsonarray import json_array_batches
from remediation.core.jsonlout import JsonlOut
from remediation.core.jsonlread import jsonl_batches
from remediation.core.leftout import without
from remediation.core.recordout import RecordOut
from remediation.errors import ConservationError
from remediation.filetypes import FileFormat
from remediation.identifiers import Identifiers, Lineage
from remediation.jsonrecords import JsonArrayRecords, JsonlRecords
from remediation.meters import Meter, customer_keys
from remediation.outcomes import AuditSink, QuarantinedRow, Tally
from remediation.outputs import PlannedOutput
from remediation.ports import CustomerDirectory, LeavesOut
from remediation.readers import CsvRecords
from remediation.records import PAYLOAD_PREFIX, UsageRecord
from remediation.rules import Rules
from remediation.sinks import Sinks
from remediation.validation import MeterIndex

BATCH_ROWS = 32768
RECORD_BATCH_ROWS = 4096  # records (a JSON array) are Python objects: fewer at a time
# JSON Lines lines a batch, held as text until matched (`core.jsonlread`). 8,192 against 7,168
# (alternating runs, once the files were written on their own thread, `spool`): 1M `varied`
# rows 6.14 -> 5.85 s, `basic` 5.25 -> 4.53 s, 7 optional keys 10.15 -> 9.68 s; peak RSS +1 to
# +3 MB (136, 128, 134 MB; 4M rows: `varied` 133 -> 139 MB, optional keys 134 -> 138 MB).
# 9,216: 141 MB; 10,240: 143 MB; 14,336: 159 MB (1M `varied`).
JSONL_BATCH_ROWS = 8192
# CSV read at once, 1.875 MB (~14,800 rows): a batch is at most one block. Each batch costs a
# fixed ~10 ms of Python between Arrow's kernels (`bench/batches.py`: 28 % of a 1M-row run in
# 1.25 MB blocks), and each MB of block about 20 MB of peak RSS. Once a block's bytes and table
# were let go before it is used and the audit lines were no longer held three times over,
# alternating runs (1M `varied` rows, medians of 5): 1.25 MB 3.47 s, 123-125 MB; 1.5625 MB
# 2.89 s, 129-131 MB; 1.875 MB 2.57 s, 134-140 MB (`bench/remediate.py`: 4M rows 142 MB, the
# CSV of 27 columns 142 MB, 4M rows 146 MB); 2.5 MB 150 MB, too near the target.
BLOCK_BYTES = 15 << 17


@dataclass(slots=True)
class RemediationResult:
    summary: dict[str, Any]
    outputs: list[PlannedOutput] = field(default_factory=list)
    corrections: int = 0
    audit: PlannedOutput | None = None  # the audit file as an output, when asked for


def _header_aliases(records: Iterable[UsageRecord]) -> dict[str, str]:
    """The payload keys a CSV input's repaired header renamed from an alias, to the alias."""
    if not isinstance(records, CsvRecords):
        return {}
    return {
        column.removeprefix(PAYLOAD_PREFIX): alias
        for column, alias in records.renamed.items()
        if column.startswith(PAYLOAD_PREFIX)
    }


def remediate(
    records: Iterable[UsageRecord],
    *,
    source: str,
    fmt: FileFormat,
    meters: Sequence[Meter],
    rules: Rules,
    now: int,
    out_dir: Path,
    generation: int = 1,
    identifiers: str = "derive",
    write: bool = True,
    customers: CustomerDirectory | None = None,
    on_audit: AuditSink | None = None,
    columns: Sequence[str] | None = None,
    lineage: Lineage | None = None,
    rejected: bool = False,
    max_rows: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    audit_output: bool = False,
    loop_protection: bool = True,
    leave_out: Sequence[LeavesOut] = (),
) -> RemediationResult:
    """Correct what the rules allow, quarantine the rest; see the module docstring.

    `audit_output`: the audit file is hashed and its lines counted as it is written, and comes
    back as an output (`RemediationResult.audit`) for a caller that uploads it.

    `rejected`: every row of the input was rejected by Stripe (a failed-records file, the
    source of a whole-file failure, rows the poller refused), so its valid rows are re-sent
    too. Otherwise only rows carrying an error code or failing our validation are.
    `lineage`: which identifiers of the input we wrote (see `identifiers`).
    `loop_protection`: a row we corrected (per lineage) that fails again with the same code is
    quarantined, not corrected again; off only for an operator's explicit re-run of
    quarantined rows after a rules change (service.jobs.quarantine_rerun).
    `leave_out`: rows left out of the run by identifier, each batch as it is read
    (`core.leftout`): not read, written or counted."""
    _use_lean_allocators()
    index = MeterIndex(meters, value_precision=rules.value_precision, limits=rules.policy.limits)
    ctx = Context(index, rules, now, customers, header_aliases=_header_aliases(records))
    ids = Identifiers(source, generation, lineage or Lineage(), identifiers == "keep")
    decider = BatchDecider(ctx, lineage or Lineage(), rejected, loop_protection)
    # The audit records of the batch being written (on the writer's thread); `put` hands them
    # over with the batch, and `written` passes them on from this thread.
    held: list[Audited] = []
    handed = None if on_audit is None else lambda *records: held.append(records)
    sinks = Sinks(
        out_dir,
        source,
        fmt,
        generation,
        columns,
        write,
        max_rows,
        handed,
        audit_output=audit_output,
        customer_keys=customer_keys(meters),
    )
    tally = Tally()
    trim_heap = _HeapTrim()
    as_bytes: CsvOut | JsonlOut | None = None
    if columns and _bytes_out(records, write):
        as_bytes = CsvOut(sinks, columns, ids, source)
    elif fmt in (FileFormat.JSONL, FileFormat.JSON) and write:
        as_bytes = JsonlOut(sinks, ids, source)
    as_records = RecordOut(sinks, ids, source)

    def put(decided: Decided) -> tuple[list[Audited], int]:
        if as_bytes is None or not as_bytes.write(decided, tally):
            as_records.write(decided, tally)
        audited = held[:]
        held.clear()
        return audited, tally.input_rows

    def written(done: tuple[list[Audited], int]) -> None:  # on this thread, in batch order
        audited, rows = done
        for records in audited:
            assert on_audit is not None
            on_audit(*records)
        if on_progress is not None:
            on_progress(rows)

    try:
        behind = on_audit is not None or not isinstance(records, CsvRecords)
        with _FEWER_COLLECTIONS, _RUN_POOL, WriteBehind(put, written, write, behind) as writer:
            for batch in without(batches(records, ahead=writer.ahead), leave_out):
                writer.put(decider.decide(batch))
                del batch  # freed before the next batch is read, not after
                trim_heap()
        outputs = sinks.finish(_summary_entry(source, generation, now, tally))
    except BaseException:
        sinks.abort()
        raise
    _check_conservation(tally, outputs, write, rejected)
    summary = _summary(source, generation, tally, outputs, sinks.audit_path)
    return RemediationResult(summary, outputs, tally.corrections, sinks.audit_output)


def _use_lean_allocators() -> None:
    """Arrow on the system allocator (jemalloc while a run reads and writes: `_RUN_POOL`),
    and the C allocator with one arena for every thread and heap thresholds that keep what a
    block frees for the next (glibc: `MMAP_THRESHOLD_BYTES`). The package names the system
    allocator before pyarrow loads (`ARROW_DEFAULT_MEMORY_POOL`, in
    `remediation/__init__.py`), so that Arrow's C++ code allocates from it too: a pool set
    from Python after the load (`pa.set_memory_pool`, as here when pyarrow was loaded before
    this package) left some of Arrow's own allocations on mimalloc, which keeps what each
    batch frees. Peak RSS of 1M rows, alternating runs (GNU time, right after a boot, shared
    libraries' pages included: ~68 MB of them): mimalloc for Arrow's own and jemalloc set
    from Python, JSON Lines 152-158 MB, CSV 141-145 MB; the system allocator throughout
    140-148 and 142-145 MB (jemalloc throughout 147-153 and 138-142 MB). The time is the same
    within the noise (CSV `varied` 3 % slower in some rounds). glibc gives each thread an
    arena of its own and keeps what each frees: with the writer thread the run spent twice
    the system time (4.4 s instead of 2.6 s for 4M rows) handing pages back and forth."""
    global _ALLOCATORS_SET
    if _ALLOCATORS_SET:
        return
    _ALLOCATORS_SET = True
    if pa.default_memory_pool().backend_name == "mimalloc":  # pyarrow loaded before us
        pa.set_memory_pool(pa.system_memory_pool())
    if platform.libc_ver()[0] == "glibc":
        mallopt = ctypes.CDLL(None).mallopt
        mallopt(_M_ARENA_MAX, 1)
        for option, value, variable, tunable in _GLIBC_THRESHOLDS:
            if not _named_by_operator(variable, tunable):
                mallopt(option, value)


_ALLOCATORS_SET = False

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h

# glibc serves allocations below `MMAP_THRESHOLD_BYTES` from its heap (not a mapping each), and
# hands the heap's free top back to the system only past `TRIM_THRESHOLD_BYTES`. Its own
# thresholds follow the largest mapping freed (a CSV block's 1.9 MB, so a 3.8 MB trim): the
# numpy temporaries of a block (its bytes compared with a line end, a quote, a control
# character) and of a batch grew the heap past that, were handed back at the next free and
# faulted in again at the next block. Alternating runs, 1M rows (GNU time): minor page faults
# 126,000-200,000 -> 35,000-59,000 (CSV), system time `basic` CSV 0.67-1.01 -> 0.47-0.61 s,
# `varied` 0.78-0.94 -> 0.48-0.54 s, its JSON Lines 1.21-1.44 -> 1.01-1.12 s, 7 optional keys
# 2.1 -> 1.4-1.6 s; wall `varied` CSV 3.35-3.98 -> 2.81-3.73 s, optional keys 16.9-17.1 ->
# 13.3-14.9 s, 27 columns 8.3-8.9 -> 7.5-7.6 s, `basic` and JSON Lines within the noise.
# Peak RSS: `varied` CSV 131-132 -> 135-137 MB, 27 columns 135-137 -> 139-142, optional keys
# 143 -> 144-145; 4M rows `varied` CSV 139 -> 137, optional keys 147 -> 148. The heap (the
# service's worker too) keeps up to 16 MB free between runs; `_HeapTrim` still trims within a
# run. An operator's `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` (or glibc tunables)
# win.
MMAP_THRESHOLD_BYTES = 4 << 20
TRIM_THRESHOLD_BYTES = 16 << 20
_GLIBC_THRESHOLDS = (
    (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, "MALLOC_MMAP_THRESHOLD_", "mmap_threshold"),
    (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES, "MALLOC_TRIM_THRESHOLD_", "trim_threshold"),
)


def _named_by_operator(variable: str, tunable: str) -> bool:
    """Whether the environment sets this glibc malloc option (its variable or its tunable)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return variable in os.environ or f"glibc.malloc.{tunable}=" in tunables


# Growth of resident memory during a run past which the C heap's free pages are handed back
# after a batch (glibc's `malloc_trim`), counted from what the process held when the run began
# (the CLI 73-80 MB, so a mark near 140 MB; the service's worker holds far more, and must not
# trim after every batch). glibc keeps what a batch frees for the next one (its trim
# threshold grows with the buffers it has mapped, up to 64 MB, and pages freed below the
# heap's top are kept whatever it is): a CSV of 27 columns (1M rows) peaked at 155-163 MB,
# 143-146 MB with the mark near 140 MB at the same speed (130 MB with 50 MB of growth, but
# JSON Lines runs, at 130-134 MB, were then trimmed after every batch, 5-10 % slower and
# three times the system time); trimmed after every batch, 113 MB and 20 % slower. A narrow
# file stays under the mark and is never trimmed.
TRIM_GROWTH_BYTES = 64 << 20


class _HeapTrim:
    """`malloc_trim` after a batch once the process holds `TRIM_GROWTH_BYTES` more than when
    the run began (glibc on Linux; elsewhere nothing)."""

    def __init__(self) -> None:
        self._mark = None if _MALLOC_TRIM is None else _resident() + TRIM_GROWTH_BYTES

    def __call__(self) -> None:
        if self._mark is not None and _resident() > self._mark:
            assert _MALLOC_TRIM is not None
            _MALLOC_TRIM(0)


def _resident() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_BYTES


def _malloc_trim() -> Callable[[int], int] | None:
    if platform.libc_ver()[0] != "glibc" or not Path("/proc/self/statm").exists():
        return None
    trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    return trim


_MALLOC_TRIM = _malloc_trim()
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if _MALLOC_TRIM is not None else 4096


Audited = tuple[pa.RecordBatch, Sequence[QuarantinedRow]]
Done = TypeVar("Done")


Setting = TypeVar("Setting")


class _Held(AbstractContextManager[None], Generic[Setting]):
    """A process-wide setting held while any run needs it: changed by the first run to enter,
    given back by the last to leave (runs may overlap in one process: the service's worker)."""

    def __init__(
        self,
        read: Callable[[], Setting],
        write: Callable[[Setting], object],
        change: Callable[[Setting], Setting],
    ) -> None:
        self._read, self._write, self._change = read, write, change
        self._lock = threading.Lock()
        self._users = 0
        self._before: Setting | None = None

    def __enter__(self) -> None:
        with self._lock:
            if not self._users:
                self._before = self._read()
                self._write(self._change(self._before))
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if not self._users:
                assert self._before is not None
                self._write(self._before)


# The GIL handed over every 0.5 ms while a writer thread runs (Python's default: 5 ms). The
# decider and the writer hand it to each other at every Arrow kernel (a few hundred times a
# batch); a thread that gave it up waited up to the full interval to get it back while the
# other ran Python. 1M CSV rows: 7 % faster (3.48 -> 3.23 s `basic`, 4.61 -> 4.28 s
# `varied`); JSON Lines 0-3 %.
SWITCH_SECONDS = 0.0005
_SHORT_SWITCHES = _Held(
    sys.getswitchinterval, sys.setswitchinterval, lambda before: min(SWITCH_SECONDS, before)
)
# The cyclic collector run less often during a run (Python's default: a young collection
# every 700 new container objects). A run makes its records in bulk and drops them a batch
# later (quarantined rows are dicts, the service's rows for them too): promoted to the old
# generation, they set off full collections of the whole process. A 1M-row `varied` run in
# the service (alternating runs) spent 4.6-4.8 s in the collector, 1.3-1.4 s with these
# (28.8-29.1 -> 24.9-25.8 s in all).
GC_THRESHOLDS = (20_000, 20, 20)
_FEWER_COLLECTIONS = _Held(
    gc.get_threshold,
    lambda thresholds: gc.set_threshold(*thresholds),
    lambda before: tuple(max(*pair) for pair in zip(before, GC_THRESHOLDS, strict=True)),
)


def _jemalloc_or(before: pa.MemoryPool) -> pa.MemoryPool:
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it
        return before


# Arrow allocates from its jemalloc while a run reads and writes (the system allocator
# otherwise, `_use_lean_allocators`). A CSV's buffers, made and freed a block at a time beside
# Python's objects on glibc's heap, left it fragmented (a `varied` run in 4 MB blocks, never
# trimmed: 158 MB of heap, 26 MB of it in use). Peak RSS of 1M rows, system -> jemalloc, in
# alternating runs on one machine (2026-12-02): `varied` 134-136 -> 117-118 MB, `basic`
# 131-135 -> 115-124 MB, the CSV of 27 columns 153-154 (over the 150 MB target) -> 124-125
# MB, at the same speed. The pool is set from Python (what pyarrow's calls allocate from;
# Arrow's C++ code keeps the pool named when it loaded), and process-wide. jemalloc has one
# arena for every thread and hands freed pages back within half a second
# (`JE_ARROW_MALLOC_CONF`, named in `remediation/__init__.py`): with its default, 4 arenas a
# core, the reading, deciding and writing threads each kept the pages they freed in an arena
# of their own (jemalloc resident 52-64 MB for 4-19 MB in use, one arena 35 MB), and JSON
# runs stayed on the system allocator then (JSON Lines with optional keys peaked at 147-152
# MB instead of 129-133 MB). With those options JSON runs allocate from jemalloc too: right
# after `make install`, alternating runs of 1M rows (2026-12-02, twenty-first session),
# `varied` JSON Lines 146-147 -> 143-147 MB, the JSON array 146-150 -> 141-143 MB, `basic`
# JSON Lines 140-142 -> 138-139 MB, 4M `varied` JSON Lines 150-152 -> 147-148 MB, JSON Lines
# with 7 optional keys 154-155 -> 156 MB, at the same speed or a little faster.
_RUN_POOL = _Held(pa.default_memory_pool, pa.set_memory_pool, _jemalloc_or)


class WriteBehind(Generic[Done]):
    """Writes decided batches one behind the decider, on a thread of its own: Arrow's kernels
    and the file writes let go of the GIL, so the writing of batch n runs alongside the reading
    and deciding of batch n+1 (1M CSV rows: 3.4 s instead of 3.9 s). `put` hands a batch to
    the writer, then passes what `write` returned for the batch before it to `written` on the
    caller's thread (audit records and progress go to the caller there, in order, while the
    writer writes the next batch); at most two batches are held. An error in `write` is raised
    on the caller's thread, at the next `put` or at the end, and no batch is written after it.
    `threaded=False` writes in place. While the writer runs, the GIL is switched more often
    (`SWITCH_SECONDS`).

    `behind=False` writes in place too, and keeps the thread for work `ahead` only. The
    decider and a writer behind it hand the GIL to each other at every Arrow kernel (about
    40,000 times for 1M CSV rows): each handover is a futex wake and a sleep, and the GIL is
    idle while the woken thread is scheduled. A CSV written as bytes (`CsvOut`) with nobody
    taking its audit records runs faster in place, its next batch made on the thread
    (alternating runs, 1M rows: `varied` 2.96-3.11 s instead of 3.57-3.70 s, `basic`
    2.38-2.42 instead of 2.45-2.61, CPU time 1.0-1.3 s less). JSON Lines (basic 4.0-4.2 s
    behind, 4.4-4.7 in place) and the service's runs (their audit records staged while the
    next batch is written: the remediation and staging 4.2-4.4 s behind, 4.7-4.9 in place)
    keep the writer behind.
    """

    def __init__(
        self,
        write: Callable[[Decided], Done],
        written: Callable[[Done], None],
        threaded: bool,
        behind: bool = True,
    ) -> None:
        self._write, self._written = write, written
        self._pool = ThreadPoolExecutor(1, "meterfix-writer") if threaded else None
        self._behind = threaded and behind
        self._switches: _Held[float] | None = None  # held from `__enter__` to `__exit__`
        self._pending: Future[Done] | None = None
        self._failed = False  # a write failed: the writer writes nothing more

    def put(self, decided: Decided) -> None:
        if not self._behind:
            self._written(self._write(decided))
            return
        assert self._pool is not None
        previous, self._pending = self._pending, self._pool.submit(self._in_order, decided)
        if previous is not None:
            self._written(previous.result())

    @property
    def ahead(self) -> Ahead | None:
        """The writer's thread, for work that may wait behind the writing (a CSV's next batch
        is read, parsed and built there: pyarrow and numpy let go of the GIL meanwhile)."""
        return None if self._pool is None else self._pool.submit

    def _in_order(self, decided: Decided) -> Done:
        if self._failed:
            raise _AfterFailure
        try:
            return self._write(decided)
        except BaseException:
            self._failed = True
            raise

    def wait(self) -> None:
        """Until every batch given is written (the first error raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._written(pending.result())

    def __enter__(self) -> WriteBehind[Done]:
        if self._behind:
            self._switches = _SHORT_SWITCHES
            self._switches.__enter__()
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if error is None:
                self.wait()
        finally:  # on an error: the batch being written ends before the outputs are aborted
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            if self._switches is not None:
                self._switches.__exit__()
                self._switches = None


class _AfterFailure(Exception):
    """A batch not written because the one before it failed (that error is raised first)."""


def _bytes_out(records: Iterable[UsageRecord], write: bool) -> bool:
    """A CSV read as columns, written in known columns: its rows are written as bytes."""
    return isinstance(records, CsvRecords) and write


def batches(
    records: Iterable[UsageRecord],
    size: int | None = None,
    ahead: Ahead | None = None,
    block_bytes: int | None = None,
) -> Iterator[Batch]:
    """The input as batches: a CSV's cells as columns (read `block_bytes` at a time, else
    `BLOCK_BYTES`), JSON Lines matched to their layouts (`ahead`: a thread to parse or match
    the next block on), other records in chunks."""
    size = size or BATCH_ROWS
    if isinstance(records, CsvRecords):
        yield from csv_batches(records, size, ahead, block_bytes)
        return
    if isinstance(records, JsonlRecords):
        yield from jsonl_batches(records, min(size, JSONL_BATCH_ROWS), ahead)
        return
    if isinstance(records, JsonArrayRecords):
        rows = min(size, JSONL_BATCH_ROWS)
        yield from json_array_batches(records, rows, min(size, RECORD_BATCH_ROWS), ahead)
        return
    yield from record_batches(records, min(size, RECORD_BATCH_ROWS))


def csv_batches(
    records: CsvRecords, size: int, ahead: Ahead | None = None, block_bytes: int | None = None
) -> Iterator[Batch]:
    """A CSV's blocks as batches of at most `size` rows (slices of a block: no copies); with
    `ahead`, each next batch is read, parsed and built on its thread while this one is used
    (before, only the parse ran there: the file reads, the block's cut and the batch's columns
    took 9 % of the deciding thread; alternating runs, 1M rows, medians of 5: `varied` 4.46 ->
    4.20 s, `basic` 3.40 -> 3.25 s, the deciding thread's CPU 10 % less)."""
    if ahead is not None:
        yield from _prefetched(csv_batches(records, size, block_bytes=block_bytes), ahead)
        return
    reader = records.columns(block_bytes or BLOCK_BYTES)
    if reader.read_header() is None:
        return
    layout = reader.layout
    assert layout is not None
    for block in reader.blocks():
        for start in range(0, block.rows, size):
            rows = min(size, block.rows - start)
            cells = [c.slice(start, rows) for c in block.cells]
            malformed = {
                i - start: reason
                for i, reason in block.malformed.items()
                if start <= i < start + rows
            }
            yield csv_batch(layout, cells, block.first_row + start, malformed, rows, block.widths)


def _prefetched(items: Iterator[Batch], ahead: Ahead) -> Iterator[Batch]:
    """`items`, each next one made on `ahead`'s thread while the one before is used."""
    upcoming = ahead(next, items, None)
    while (item := upcoming.result()) is not None:
        upcoming = ahead(next, items, None)
        yield item
        del item


def _summary_entry(source: str, generation: int, now: int, tally: Tally) -> dict[str, Any]:
    return {
        "kind": "summary",
        "source": source,
        "generation": generation,
        "now": now,
        "input_rows": tally.input_rows,
        "valid": tally.valid,
        "corrected": tally.corrected,
        "quarantined": tally.quarantined,
    }


def _check_conservation(
    tally: Tally, outputs: list[PlannedOutput], write: bool, rejected: bool
) -> None:
    if tally.input_rows != tally.valid + tally.corrected + tally.quarantined:
        raise ConservationError(
            f"rows in {tally.input_rows} != valid {tally.valid} + "
            f"corrected {tally.corrected} + quarantined {tally.quarantined}"
        )
    if tally.valid_kept > tally.valid or (rejected and tally.valid_kept):
        # every row of a rejected input goes to an output; others keep only valid rows out
        raise ConservationError(f"{tally.valid_kept} valid rows kept out of {tally.valid} valid")
    written = sum(output.rows for output in outputs)
    if write and written != tally.written():
        raise ConservationError(
            f"{written} rows written for {tally.input_rows} rows in "
            f"({tally.valid_kept} valid rows never rejected, never re-sent)"
        )


def _summary(
    source: str, generation: int, tally: Tally, outputs: list[PlannedOutput], audit: Path | None
) -> dict[str, Any]:
    return {
        "source": source,
        "generation": generation,
        "input_rows": tally.input_rows,
        "valid": tally.valid,
        "corrected": tally.corrected,
        "quarantined": tally.quarantined,
        "unclassified": tally.unclassified,
        "corrections": tally.corrections,
        "by_code": {code: tally.by_code[code] for code in sorted(tally.by_code)},
        "outputs": {
            "corrected": [str(o.path) for o in outputs if o.kind == "corrected"],
            "quarantine": [str(o.path) for o in outputs if o.kind == "quarantine"],
            "audit": str(audit) if audit else None,
        },
    }
