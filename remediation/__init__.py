"""Pure remediation domain: records, error codes, validation, readers, writers; `core/` the
columnar engine and its rules."""

import importlib.util
import os
from pathlib import Path


def _arrow_pool() -> str:
    """jemalloc when this pyarrow was built with it (as its Linux wheels are: its build
    settings say so, `include/arrow/util/config.h`), else the system allocator; read before
    pyarrow loads, without loading it (Arrow names an allocator it lacks on stderr)."""
    spec = importlib.util.find_spec("pyarrow")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            config = (Path(folder) / "include/arrow/util/config.h").read_text(errors="replace")
        except OSError:
            continue
        if "#define ARROW_JEMALLOC\n" in config:
            return "jemalloc"
    return "system"


# Arrow's allocator for the whole process, named before pyarrow first loads (it reads this
# once then; only this package imports pyarrow), unless the operator named one. See
# `engine._use_lean_allocators` for why jemalloc and for what it measured.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", _arrow_pool())
