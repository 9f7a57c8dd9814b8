"""The writer thread (`writebehind.WriteBehind`): batches written in order, one behind the decider;
audit records and progress handed over on the caller's thread; an error on either side stops
the run with every output aborted and no thread left behind."""

from __future__ import annotations

import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from remediation import batching, engine, memory, writebehind
from remediation.core.csvout import CsvOut
from remediation.core.csvread import CsvColumns
from remediation.core.decided import Decided
from remediation.errors import UnreadableFile
from remediation.outcomes import QuarantinedRow, Tally, corrections_of
from remediation.writebehind import WriteBehind
from tests.unit.remediation.test_batches import run_file, write_csv
from tests.unit.remediation.test_csv_columns import varied_rows
from tests.unit.remediation.test_jsonl_columns import to_jsonl, varied


def _writers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("meterfix-writer")]


@pytest.mark.parametrize("threaded", [True, False])
def test_batches_are_written_in_order_and_handed_over_on_the_callers_thread(
    threaded: bool,
) -> None:
    events: list[tuple[str, Any, int]] = []
    caller = threading.get_ident()

    def write(item: Any) -> Any:
        time.sleep(0.01 if item % 2 else 0)  # a slow batch is not overtaken by the next
        events.append(("write", item, threading.get_ident()))
        return item * 10

    def written(done: Any) -> None:
        events.append(("written", done, threading.get_ident()))

    with WriteBehind(write, written, threaded=threaded) as behind:
        for item in range(6):
            behind.put(item)
    assert [e[1] for e in events if e[0] == "write"] == list(range(6))
    assert [e[1] for e in events if e[0] == "written"] == [i * 10 for i in range(6)]
    for item in range(6):  # handed over only after it was written
        wrote = next(at for at, e in enumerate(events) if e[:2] == ("write", item))
        handed = next(at for at, e in enumerate(events) if e[:2] == ("written", item * 10))
        assert wrote < handed
    assert all(e[2] == caller for e in events if e[0] == "written")
    writers = {e[2] for e in events if e[0] == "write"}
    assert (writers != {caller}) is threaded
    assert not _writers()


def test_a_failed_write_is_raised_to_the_caller_and_nothing_is_written_after_it() -> None:
    wrote: list[int] = []

    def write(item: Any) -> None:
        if item == 2:
            raise OSError("disk full")
        wrote.append(item)

    with (
        pytest.raises(OSError, match="disk full"),
        WriteBehind(write, lambda done: None, threaded=True) as behind,
    ):
        for item in range(5):
            behind.put(item)
    assert wrote == [0, 1]
    assert not _writers()


def test_an_error_in_the_caller_waits_for_the_batch_being_written() -> None:
    finished: list[int] = []

    def write(item: Any) -> None:
        time.sleep(0.2)
        finished.append(item)

    with (
        pytest.raises(ValueError, match="decide failed"),
        WriteBehind(write, lambda done: None, threaded=True) as behind,
    ):
        behind.put(1)
        raise ValueError("decide failed")
    assert finished == [1]  # the outputs are aborted only after this
    assert not _writers()


def test_audit_records_and_progress_reach_the_caller_in_row_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many batches (blocks of 4 KB) written by the writer thread: the records the service
    stores arrive on the caller's thread, in row order, one hand-over per batch, and the
    progress counts every row once."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 4096)
    path = write_csv(tmp_path / "in.csv", varied_rows(2000, 21))
    caller = threading.get_ident()
    stored: list[Any] = []
    threads: set[int] = set()
    progress: list[int] = []

    def on_audit(corrections: pa.RecordBatch, quarantined: list[QuarantinedRow]) -> None:
        threads.add(threading.get_ident())
        stored.append((corrections, quarantined))

    summary, files = run_file(
        path, tmp_path / "out", on_audit=on_audit, on_progress=progress.append
    )
    assert threads == {caller}
    assert len(stored) == len(progress) > 20  # one hand-over per batch
    assert progress == sorted(progress) and progress[-1] == summary["input_rows"] == 2000
    rows = [c.row for corrections, _ in stored for c in corrections_of(corrections)]
    assert rows == sorted(rows) and len(rows) == summary["corrections"]
    quarantined = [q.row for _, found in stored for q in found]
    assert quarantined == sorted(quarantined) and len(quarantined) == summary["quarantined"]
    audit = next(v for k, v in files.items() if k.endswith(".audit.jsonl")).decode()
    lines = [json.loads(line) for line in audit.splitlines()]
    assert [x["row"] for x in lines if x["kind"] == "correction"] == rows
    assert not _writers()


@pytest.mark.parametrize("audited", [True, False])
def test_a_failure_in_the_writer_aborts_every_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """The third batch fails while it is written (on the writer thread when the caller takes
    the audit records, in place when not: see the next test): the run raises it, no output or
    temporary file is left, and the writer thread is gone."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 4096)
    path = write_csv(tmp_path / "in.csv", varied_rows(600, 22))
    real = CsvOut.write
    calls: list[int] = []

    def failing(self: CsvOut, decided: Decided, tally: Tally) -> bool:
        calls.append(threading.get_ident())
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(self, decided, tally)

    monkeypatch.setattr(CsvOut, "write", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        run_file(path, out, on_audit=(lambda *records: None) if audited else None)
    assert len(calls) == 3 and (threading.get_ident() not in calls) is audited
    assert list(out.iterdir()) == []
    assert not _writers()


@pytest.mark.parametrize("audited", [True, False])
def test_a_csv_unreadable_past_its_first_blocks_fails_the_run_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """Blocks are read and made batches ahead, on the writer's thread: a byte that is not
    UTF-8 several blocks in still fails the run with the reader's own error (the offset in
    the file), raised on the caller's thread after the batches before it were decided; no
    output or temporary file is left, and the writer thread is gone."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 4096)
    good = write_csv(tmp_path / "in.csv", varied_rows(600, 25)).read_bytes()
    at = good.index(b"\n", 5 * 4096) + 1
    path = tmp_path / "bad.csv"
    path.write_bytes(good[:at] + b"\xff" + good[at:])
    decided: list[int] = []
    decide = engine.BatchDecider.decide

    def watched(self: Any, batch: Any) -> Any:
        decided.append(threading.get_ident())
        return decide(self, batch)

    monkeypatch.setattr(engine.BatchDecider, "decide", watched)
    out = tmp_path / "out"
    with pytest.raises(UnreadableFile, match=f"undecodable byte at offset {at}$"):
        run_file(path, out, on_audit=(lambda *records: None) if audited else None)
    assert len(decided) >= 4 and set(decided) == {threading.get_ident()}
    assert list(out.iterdir()) == []
    assert not _writers()


@pytest.mark.parametrize("audited", [True, False])
def test_a_csv_is_written_behind_only_when_its_audit_records_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audited: bool
) -> None:
    """A CSV written as bytes is written in place unless the caller takes its audit records
    (the service stages them while the next batch is written); its blocks are read, parsed
    and made batches ahead on the writer's thread either way. Same bytes both ways."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 4096)
    path = write_csv(tmp_path / "in.csv", varied_rows(600, 24))
    caller = threading.get_ident()
    writes: set[int] = set()
    parses: set[int] = set()
    built: set[int] = set()
    write, parse, build = CsvOut.write, CsvColumns._parsed, batching.csv_batch

    def watched_write(self: CsvOut, decided: Decided, tally: Tally) -> bool:
        writes.add(threading.get_ident())
        return write(self, decided, tally)

    def watched_parse(self: CsvColumns, block: bytes, delimiter: int) -> Any:
        parses.add(threading.get_ident())
        return parse(self, block, delimiter)

    def watched_build(*args: Any, **kwargs: Any) -> Any:
        built.add(threading.get_ident())
        return build(*args, **kwargs)

    monkeypatch.setattr(CsvOut, "write", watched_write)
    monkeypatch.setattr(CsvColumns, "_parsed", watched_parse)
    monkeypatch.setattr(batching, "csv_batch", watched_build)
    _, files = run_file(
        path, tmp_path / "out", on_audit=(lambda *records: None) if audited else None
    )
    assert (writes == {caller}) is not audited and len(writes) == 1
    assert parses and caller not in parses
    assert built and caller not in built
    _, plain = run_file(path, tmp_path / "plain", on_audit=None)
    assert files == plain
    assert not _writers()


def test_a_run_leaves_arrow_on_a_lean_allocator(tmp_path: Path) -> None:
    """Arrow's default pool (mimalloc) kept what each batch freed (peak RSS +10 MB for 1M
    JSON Lines rows): a run leaves Arrow on the system allocator (named before pyarrow
    loads, see the next test; set from Python when pyarrow loaded first)."""
    run_file(write_csv(tmp_path / "in.csv", varied_rows(50, 23)), tmp_path / "out")
    assert pa.default_memory_pool().backend_name in ("system", "jemalloc")


def _jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_run_reads_and_writes_on_jemalloc_and_gives_the_pool_back(
    tmp_path: Path, suffix: str
) -> None:
    """A run's Arrow buffers come from jemalloc (when this pyarrow has it) for the length of
    the run, apart from glibc's heap (a 27-column CSV's peak: 153 -> 124 MB), whatever the
    format (JSON runs stayed on the system allocator until jemalloc had one arena and handed
    freed pages back: right after `make install`, `varied` JSON Lines 146-147 -> 143-147 MB,
    the JSON array 146-150 -> 141-143 MB). The pool before the run comes back after it."""
    rows = varied(300, 29)
    if suffix == ".csv":
        path = write_csv(tmp_path / "in.csv", varied_rows(300, 29))
    elif suffix == ".jsonl":
        path = tmp_path / "in.jsonl"
        path.write_bytes(to_jsonl(rows))
    else:
        path = tmp_path / "in.json"
        path.write_text(json.dumps(rows, ensure_ascii=False))
    memory.use_lean_allocators()  # what the first run in a process sets (`RUN_POOL` after)
    # a first run makes what later runs share (lookups cached on the pool of its run): run
    # alone, this test saw 640 bytes still allocated after its run otherwise
    run_file(path, tmp_path / "first")
    before = pa.default_memory_pool().backend_name
    seen: list[str] = []
    jemalloc = pa.jemalloc_memory_pool().bytes_allocated() if _jemalloc() else 0

    def progress(rows: int) -> None:
        seen.append(pa.default_memory_pool().backend_name)

    summary, files = run_file(path, tmp_path / "out", on_progress=progress)
    assert summary["corrected"] > 0 and files
    expected = "jemalloc" if _jemalloc() else "system"
    assert seen and set(seen) == {expected}
    assert pa.default_memory_pool().backend_name == before == "system"
    if expected == "jemalloc":  # what the run freed went back to the pool it came from
        assert pa.jemalloc_memory_pool().bytes_allocated() == jemalloc


ALLOCATOR_PROBE = """
import sys
import remediation.engine
import pyarrow as pa
import pyarrow.csv
print(pa.default_memory_pool().backend_name, pa.total_allocated_bytes() >= 0)
"""


@pytest.mark.parametrize(("named", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_arrow_allocates_from_the_system_allocator_unless_the_operator_names_one(
    named: str | None, expected: str
) -> None:
    """The package names Arrow's allocator before pyarrow loads, so Arrow's C++ code uses it
    too (a pool set from Python after the load left some of its allocations on mimalloc); an
    operator's `ARROW_DEFAULT_MEMORY_POOL` is kept. A fresh interpreter: this one loaded
    pyarrow long ago."""
    done = _fresh_interpreter(ALLOCATOR_PROBE, "ARROW_DEFAULT_MEMORY_POOL", named)
    assert done.stdout.split() == [expected, "True"]


def _fresh_interpreter(
    script: str, variable: str, value: str | None
) -> subprocess.CompletedProcess[str]:
    """`script` run by a fresh interpreter (this one loaded pyarrow long ago), with the
    environment `variable` set to `value`, or unset when None."""
    env = {k: v for k, v in os.environ.items() if k != variable}
    if value is not None:
        env[variable] = value
    return subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


JEMALLOC_PROBE = """
import ctypes, glob, os
import remediation.engine
import pyarrow as pa
pa.array(["a CSV's buffer"], memory_pool=pa.jemalloc_memory_pool())
(lib,) = [path for d in pa.get_library_dirs() for path in glob.glob(d + "/libarrow.so.*[0-9]")]
# arrow::jemalloc_stats_print(const char*): jemalloc's report on stderr; "mdablxe" leaves out
# everything but its general part, where the options are
ctypes.CDLL(lib)._ZN5arrow20jemalloc_stats_printEPKc(b"mdablxe")
"""


@pytest.mark.skipif(not _jemalloc(), reason="this pyarrow has no jemalloc")
@pytest.mark.parametrize(
    ("named", "options"),
    [(None, ["1", "500", "0"]), ("narenas:2", ["2", "1000", "1000"])],
)
def test_arrows_jemalloc_has_one_arena_and_hands_pages_back_unless_the_operator_names_options(
    named: str | None, options: list[str]
) -> None:
    """The package names jemalloc's options before Arrow's jemalloc first allocates: one arena
    for every thread (jemalloc's default, 4 a core, gave the reading, deciding and writing
    threads arenas of their own, each keeping the pages it freed: a 27-column CSV's peak RSS
    159-168 -> 146-151 MB), and freed pages handed back within half a second, never lazily
    freed first (Arrow's 1,000 ms each: pages lazily freed count in RSS until memory runs
    short; right after `make install`, 1M `varied` CSV rows peaked at 140-141 MB instead of
    145-150, 4M at 144-146 instead of 152-154). An operator's `JE_ARROW_MALLOC_CONF` is
    kept, with Arrow's own settings for what it leaves out."""
    done = _fresh_interpreter(JEMALLOC_PROBE, "JE_ARROW_MALLOC_CONF", named)
    wanted = ("opt.narenas:", "opt.dirty_decay_ms:", "opt.muzzy_decay_ms:")
    found = [
        line.split()[:2] for line in done.stderr.splitlines() if line.strip().startswith(wanted)
    ]
    assert found == [[name, value] for name, value in zip(wanted, options, strict=True)]


HEAP_PROBE = """
import resource
import numpy as np
from remediation import batching, memory
memory.use_lean_allocators()  # what the first run in a process sets
data = np.zeros(batching.BLOCK_BYTES, np.uint8)  # a CSV block's bytes
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def temporaries():  # what a block's checks make and free: a line end, a control character
    lines = data == 10
    controls = data < 32
    both = lines & controls
    del lines, controls, both
temporaries()
before = faults()
for _ in range(40):
    temporaries()
print(faults() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc options")
@pytest.mark.parametrize(
    ("variable", "value", "kept"),
    [
        (None, None, True),
        ("MALLOC_TRIM_THRESHOLD_", "131072", False),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072", False),
    ],
)
def test_the_heap_keeps_what_a_block_frees_unless_the_operator_names_thresholds(
    variable: str | None, value: str | None, kept: bool
) -> None:
    """glibc's heap serves and keeps the numpy temporaries of a block (`MMAP_THRESHOLD_BYTES`,
    `TRIM_THRESHOLD_BYTES`): with its own thresholds (following the largest mapping freed) a
    block's temporaries grew the heap past its trim threshold, were handed back at the next
    free and faulted in again at the next block, 1,400 page faults each time here (a 1M-row
    CSV run: 126,000-200,000 minor faults, 35,000-59,000 with the thresholds). An operator's
    `MALLOC_TRIM_THRESHOLD_` (or glibc tunable) is kept: the faults come back. A fresh
    interpreter: glibc's options are the process's."""
    done = _fresh_interpreter(HEAP_PROBE, variable or "MALLOC_TRIM_THRESHOLD_", value)
    faults = int(done.stdout)
    if kept:
        assert faults < 100
    else:
        assert faults > 40 * 1000


def test_the_gil_is_switched_more_often_while_any_writer_runs() -> None:
    """The shorter switch interval holds from the first writer's start to the last one's end
    (two runs in one process overlap), then the interval there was comes back; a writer in
    place leaves it alone."""
    before = sys.getswitchinterval()
    assert before > writebehind.SWITCH_SECONDS
    seen: list[float] = []

    def write(item: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return item

    first = WriteBehind(write, lambda done: None, threaded=True)
    second = WriteBehind(write, lambda done: None, threaded=True)
    with WriteBehind(write, lambda done: None, threaded=False) as in_place:
        in_place.put(0)
    assert seen == [before]
    with first:
        first.put(1)
        with second:
            second.put(2)
        assert sys.getswitchinterval() == writebehind.SWITCH_SECONDS  # the first still runs
        first.put(3)
    assert seen[1:] == [writebehind.SWITCH_SECONDS] * 3
    assert sys.getswitchinterval() == before


def test_a_failed_run_gives_the_switch_interval_back() -> None:
    before = sys.getswitchinterval()
    seen: list[float] = []

    def write(item: Any) -> Any:
        seen.append(sys.getswitchinterval())
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WriteBehind(write, print, threaded=True) as w:
        w.put(1)
        w.put(2)
    assert seen == [writebehind.SWITCH_SECONDS]  # the second batch was never written
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("before", [(700, 10, 10), (50_000, 5, 100)])
def test_the_collector_runs_less_often_during_a_run_and_as_before_after(
    tmp_path: Path, before: tuple[int, int, int]
) -> None:
    """During a run the cyclic collector's thresholds are at least `GC_THRESHOLDS` (a higher
    one an operator set is kept); after it, and after a failed run, they are as they were."""
    path = write_csv(tmp_path / "in.csv", varied_rows(300, 5))
    seen: list[tuple[int, int, int]] = []
    original = gc.get_threshold()
    gc.set_threshold(*before)
    try:
        run_file(path, tmp_path / "out", on_progress=lambda rows: seen.append(gc.get_threshold()))
        during = tuple(max(pair) for pair in zip(before, memory.GC_THRESHOLDS, strict=True))
        assert seen and set(seen) == {during}
        assert gc.get_threshold() == before

        def fail(rows: int) -> None:
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            run_file(path, tmp_path / "again", on_progress=fail)
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*original)
