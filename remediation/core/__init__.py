"""The columnar remediation engine: readers, rules (`rules/`), decisions and writers over Arrow
record batches."""

import importlib.abc
import sys

import pyarrow as pa


class _RefusePandas(importlib.abc.MetaPathFinder):
    """Makes `import pandas` raise ImportError while it is first on `sys.meta_path` (None in
    `sys.modules` would not do: pyarrow's compiled import hands the None back)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not for pyarrow to load in meterfix")


def _arrow_without_pandas() -> None:
    """Tell pyarrow, once, that pandas is not there, so that it never loads it.

    pyarrow looks for pandas the first time it is handed a Python list (is it a pandas
    Series?) and again the first time it infers a list's type (for pandas' nulls); it imports
    pandas then, if installed, and keeps it. The engine never hands it pandas objects, but a
    run on a machine that has pandas paid 0.7 s and ~35 MB of RSS for the import (a 1M-row
    CSV run: 164-175 MB peak, over the 150 MB target, against 130-134 MB without). Each
    look-up is made once per process: made here with `import pandas` refused, pyarrow
    remembers "no pandas" for these checks. pandas itself stays importable, and an explicit
    conversion (`to_pandas`) still loads it. Nothing in meterfix imports pandas; while these
    two calls run, no other thread could."""
    if "pandas" in sys.modules:  # loaded already (by whoever embeds us): nothing to save
        return
    refuse = _RefusePandas()
    sys.meta_path.insert(0, refuse)
    try:
        pa.array([], pa.string())  # the Python-side look-up (pyarrow's pandas shim)
        pa.array([None])  # the C++ side's, for its null checks
    finally:
        sys.meta_path.remove(refuse)


_arrow_without_pandas()
