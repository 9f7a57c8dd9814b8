"""Pure remediation domain: records, error codes, validation, readers, writers; `core/` the
columnar engine and its rules."""

import os

# Arrow's allocator for the whole process, named before pyarrow first loads (it reads this
# once then; only this package imports pyarrow), unless the operator named one. See
# `memory.use_lean_allocators` for why the system allocator and for what it measured (and
# `memory.RUN_POOL` for jemalloc while a run reads and writes).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
# Arrow's jemalloc (a run's pool) with one arena for every thread, and the pages it frees
# handed back to the system half a second later (`dirty_decay_ms`), never first marked lazily
# freed (`muzzy_decay_ms`: Linux counts such pages in RSS until memory runs short; Arrow's own
# setting holds each kind for a second). Read when it first allocates; an operator's options
# win. See `memory.RUN_POOL`.
os.environ.setdefault("JE_ARROW_MALLOC_CONF", "narenas:1,dirty_decay_ms:500,muzzy_decay_ms:0")
