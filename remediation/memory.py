"""How a run holds the process's memory: the allocators (Arrow's pool, glibc's arena and
thresholds), the C heap trimmed as a run grows, the cyclic collector run less often.

Apart from the run (`engine`) because these are process-wide settings with their own measured
reasons, held by the first run to enter and given back by the last (`Held`, which the writer
thread's switch interval, `writebehind`, uses too).
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa


def use_lean_allocators() -> None:
    """Arrow on the system allocator (jemalloc while a run reads and writes: `RUN_POOL`),
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
# service's worker too) keeps up to 16 MB free between runs; `HeapTrim` still trims within a
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


class HeapTrim:
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


Setting = TypeVar("Setting")


class Held(AbstractContextManager[None], Generic[Setting]):
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


# The cyclic collector run less often during a run (Python's default: a young collection
# every 700 new container objects). A run makes its records in bulk and drops them a batch
# later (quarantined rows are dicts, the service's rows for them too): promoted to the old
# generation, they set off full collections of the whole process. A 1M-row `varied` run in
# the service (alternating runs) spent 4.6-4.8 s in the collector, 1.3-1.4 s with these
# (28.8-29.1 -> 24.9-25.8 s in all).
GC_THRESHOLDS = (20_000, 20, 20)
FEWER_COLLECTIONS = Held(
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
# otherwise, `use_lean_allocators`). A CSV's buffers, made and freed a block at a time beside
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
RUN_POOL = Held(pa.default_memory_pool, pa.set_memory_pool, _jemalloc_or)
