"""JSON Lines lines of any number of layouts, read at once: grouped by shape, cut out together.

Matching lines against layouts (`jsonlread`) costs a regex pass per layout and batch: a file
whose rows carry optional payload keys (128 layouts) took 42 s for 1M rows, most lines read by
`json.loads` once the layouts kept ran out, against 11 s for a json.loads/json.dumps copy.
Here the lines no hot layout took are first held against one grammar (`LINE`: an object of
keys without quotes, escapes, control characters or `,:{}`, whose values are strings without
quotes, escapes or control characters, numbers as `json.dumps` writes them, true, false, null,
or, one level down, objects of those). A line that fits has one reading as keys and values, so
one regex replacement gives its shape (`line_shapes`): its text with every string value but its
closing quote, and every number, taken out after its key's separator. Lines of one shape have
the same keys in the same order, values of the same kinds, the same separators: the layout
learned from the first of them (`learn`, one `json.loads` per shape) is what every other one
matches. Their values are then cut out of all lines at once, whatever the number of shapes:
the lines split at their quotes, one gather per column from each row's shape's place for it.
A line that does not fit, or whose shape learned no layout, is left to the line reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import Kind
from remediation.core.jsonlbatch import mask
from remediation.core.jsonlcutout import ShapesRead, cut_out
from remediation.core.jsonllayouts import SLOTS, Layout, learn
from remediation.jsonvalues import parse_line

MAX_SHAPES = 1024  # shapes remembered per file (a line of a shape beyond them: the line reader)
# ... and pieces of their layouts (`Layout.pieces`): a shape of a few dozen keys is ~50, one of
# rows naming 500 keys of their own ~2,000, each its layout's leaves and pattern (~250 kB).
# 1,024 such shapes held 270 MB (4,000 rows of 500 keys: 453 MB peak, 188 MB without them).
MAX_SHAPE_PIECES = 1 << 17

_STRING = r'"[^"\\\x00-\x1f]*"'
_KEY = r'"[^"\\\x00-\x1f,:{}]+"'
_VALUE = rf"(?:{_STRING}|{SLOTS[Kind.INT]}|true|false|null)"
_FLAT = rf"\{{(?:{_KEY}: ?{_VALUE}(?:, ?{_KEY}: ?{_VALUE})*)?\}}"
LINE = rf"^\{{{_KEY}: ?(?:{_VALUE}|{_FLAT})(?:, ?{_KEY}: ?(?:{_VALUE}|{_FLAT}))*\}}$"
# In a line that fits `LINE`, a key's closing quote and its separator (`":` only closes a key:
# a string value is followed by `,` or `}`) with the value after it, a string but its closing
# quote or a number, in one pass: a string leaves `":"` and a number `":` (then `,` or `}`),
# the separator kept (captured); true, false, null and an object stay (`":true`, `":{`). A
# line's shape spells its keys, separators and every value's kind. One pass, so that every
# match starts at a key's end: matched left to right, each string value is taken whole before
# its text is looked at. A pass per separator style (and one more for numbers) looked into the
# string values of the other style: a value starting with `:` was taken for a key's end, and
# two lines of different keys could get one shape (one read with the other's layout: a key
# read under another's name).
_VALUES = (r'"(: ?)(?:"[^"]*|-?[0-9][0-9.]*)', '"\\1')
_UNSEEN = object()


class Shapes:
    """The shapes of a file's lines seen so far, each with its layout (None: none learned)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.known: dict[str, Layout | None] = {}
        self.pieces = 0  # of the known layouts

    def read(
        self,
        text: pa.Array,
        candidates: np.ndarray[Any, Any],
        numbers: Sequence[int],
        shaped: LineShapes | None = None,
    ) -> ShapesRead:
        """The `candidates` lines of `text` whose shape has a layout, as rows (`shaped`: the
        shapes of these lines and maybe others, when found already)."""
        if shaped is None:
            shaped = shape_lines(text, candidates)
        candidates = candidates[shaped.fits[candidates]]
        if not len(candidates):
            return _NOTHING
        lines = text if len(candidates) == len(text) else text.take(pa.array(candidates))
        present, first, codes = np.unique(
            shaped.codes[candidates], return_index=True, return_inverse=True
        )
        codes = codes.reshape(-1)
        layouts = [
            self._layout(shaped.shapes[shape], lines, int(at))
            for shape, at in zip(present.tolist(), first.tolist(), strict=True)
        ]
        usable = np.asarray([layout is not None for layout in layouts], bool)
        taken = usable[codes]
        if not taken.any():
            return _NOTHING
        if not taken.all():
            candidates, lines, codes = (
                candidates[taken],
                lines.filter(pa.array(taken)),
                codes[taken],
            )
        kept = [layout for layout in layouts if layout is not None]
        renumbered = np.cumsum(usable) - 1
        return cut_out(kept, renumbered[codes], lines, candidates, np.asarray(numbers))

    def _layout(self, shape: str, lines: pa.Array, at: int) -> Layout | None:
        found = self.known.get(shape, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        if len(self.known) >= MAX_SHAPES or self.pieces >= MAX_SHAPE_PIECES:
            return None
        line = lines[at].as_py()
        obj, refusal = parse_line(line, self.depth)
        layout = learn(obj, line, self.depth) if refusal is None else None
        self.known[shape] = layout
        self.pieces += 1 if layout is None else layout.pieces
        return layout


_NOTHING = ShapesRead(np.zeros(0, np.int64), None, {})


def line_shapes(lines: pa.Array) -> pa.Array:
    """Each line's shape (lines that fit `LINE`): its keys, separators and values' kinds."""
    return pc.replace_substring_regex(lines, *_VALUES)


@dataclass(frozen=True)
class LineShapes:
    """Lines of a batch's text looked at once, for both its cut into batches (`shape_keys`)
    and its read (`Shapes.read`): per line of the text, whether it fits `LINE` (False where
    not looked at) and its shape's place in `shapes` (-1: none)."""

    fits: np.ndarray[Any, Any]
    codes: np.ndarray[Any, Any]
    shapes: list[str]


def shape_lines(text: pa.Array, lines: np.ndarray[Any, Any]) -> LineShapes:
    """The shapes of the `lines` (places in `text`) that fit `LINE`."""
    subset = text if len(lines) == len(text) else text.take(pa.array(lines))
    fit = mask(pc.match_substring_regex(subset, LINE))
    fits = np.zeros(len(text), bool)
    codes = np.full(len(text), -1, np.int64)
    if not fit.any():
        return LineShapes(fits, codes, [])
    encoded = pc.dictionary_encode(line_shapes(subset.filter(pa.array(fit))))
    fits[lines[fit]] = True
    codes[lines[fit]] = encoded.indices.to_numpy(zero_copy_only=False)
    return LineShapes(fits, codes, encoded.dictionary.to_pylist())


def merged_shapes(first: LineShapes, second: LineShapes) -> LineShapes:
    """The shapes of two sets of lines apart (of one text), as one: a shape both saw has one
    place."""
    place = {shape: at for at, shape in enumerate(first.shapes)}
    renumbered = np.asarray(
        [place.setdefault(shape, len(place)) for shape in second.shapes], np.int64
    )
    codes = first.codes.copy()
    codes[second.fits] = renumbered[second.codes[second.fits]]
    return LineShapes(first.fits | second.fits, codes, list(place))


# A key in a line's shape, with its quotes: keys hold none of `"\,:{}` nor a control
# character (`LINE`), and what is left of a string value (its closing quote) is followed by
# `,` or `}`, so only a key's opening quote starts a match.
_SHAPE_KEY = re.compile(r'("[^"\\\x00-\x1f,:{}]+"): ?')


def shape_keys(shape: str) -> frozenset[str]:
    """The keys a line of this shape names at any depth, as written (`jsonllines.line_keys`
    reads them from any line: a regex pass over every line, 38 % of a run's main thread on
    the optional-keys file, where a line's shape is found for its read anyway)."""
    return frozenset(_SHAPE_KEY.findall(shape))
