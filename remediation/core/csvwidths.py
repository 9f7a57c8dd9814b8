"""The widest cell of each column of a CSV block, when no cell of it holds a control character.

Counted on the block's bytes: when its only control bytes are its line ends (one line feed per
row, each carriage return right before one) and its delimiters (a tab: as many as the rows'
separators need), no cell holds a control character (`textmeasures.has_control`), and each column's
widest cell, from the lengths Arrow parsed, tells which length checks no cell can fail (a cell
has at most as many characters as bytes: `textmeasures.longer`). The field-limit checks of each
column are then skipped instead of made one by one (the block is measured on the thread that
parses it; on a CSV of 27 columns the checks were a seventh of the deciding thread's time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc

from remediation.core.textmeasures import CONTROL_BYTES

_LF, _CR = ord("\n"), ord("\r")
# The bytes that may start a control character past C0 (DEL, 0xE2 of U+2028/U+2029): a block
# holding one is not measured; the C0 ones are counted.
_HIGH_CONTROL = tuple(bytes([byte]) for byte in CONTROL_BYTES if byte >= 0x20)


def plain_widths(block: bytes, delimiter: int, table: Any) -> list[int] | None:
    """Each column's widest cell in bytes, when no cell of `table` (the block's rows as pyarrow
    parsed them, every cell text) holds a control character; else None. `delimiter` is the
    delimiter's byte."""
    rows = table.num_rows
    if not rows or any(byte in block for byte in _HIGH_CONTROL):
        return None
    data = np.frombuffer(block, np.uint8)
    breaks = int(np.count_nonzero(data == _LF))
    # one line feed ends each row, but the file's last; a block may open with the line feed of
    # the line before it (a header's "\r\n" is read up to its "\r")
    if breaks + (data[-1] != _LF) - (data[0] == _LF) != rows:
        return None  # a line break inside a cell, or a blank line
    returns = int(np.count_nonzero(data == _CR))
    if returns and returns != np.count_nonzero((data[:-1] == _CR) & (data[1:] == _LF)):
        return None  # a carriage return not ending a line
    delimiters = 0
    if delimiter < 0x20:  # a tab: inside a (quoted) cell there is one too many
        delimiters = int(np.count_nonzero(data == delimiter))
        if delimiters != rows * (table.num_columns - 1):
            return None
    if np.count_nonzero(data < 0x20) != breaks + returns + delimiters:
        return None  # another C0 control character
    return [_widest(column) for column in table.columns]


def _widest(column: Any) -> int:
    widest = pc.max(pc.binary_length(column)).as_py()
    return 0 if widest is None else int(widest)
