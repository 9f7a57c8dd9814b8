"""JSON Lines read into batches of columns, most lines without `json.loads`.

Lines of a failed-records file mostly share a few layouts: the same keys in the same order, each
value a string, a number, true, false or null, written by one serializer (`jsonllayouts`). The
lines no layout kept here matches are read by shape (`jsonlshapes`): the first line of a shape
is parsed by `json.loads` (`jsonvalues.parse_line`) and its layout learned, the others are cut
out by it. A layout that read a good share of a batch is kept, and its lines in later batches
matched against it by Arrow (RE2, a whole batch at once, the next batch on `ahead`'s thread): a
matched line is split at its quotes, so each value sits at a known place, and lands in columns
with the kind and the text the line reader would have given it (a number with a fraction keeps
its text: `jsonnumbers`). A line that fits no shape, or one whose values need decoding (escapes,
nested values beyond `payload` and `error`, exponents, a boolean or null as the identifier,
timestamp, event name or error), is read by the line reader, unchanged (a file whose every line
held a null took 13.0 s for 1M rows there, against 3.6 s matched): `parse_line` and
`record_from_obj`, and its row joins the batch in its place. So a line matched here reads
exactly as it reads there; `test_jsonl_read` holds the two together, records and column texts.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.batchbounds import cell_spans
from remediation.core.batchjoin import concat_batches
from remediation.core.column import Ahead
from remediation.core.columns import Batch, Kind
from remediation.core.jsonlbatch import in_range, layout_batch, mask
from remediation.core.jsonlkeys import Shaping, row_keys, within
from remediation.core.jsonllayouts import MAX_NUMBER_CHARS, Layout
from remediation.core.jsonllines import Lines, line_arrays
from remediation.core.jsonlmatch import Started, matched
from remediation.core.jsonlshapes import LineShapes, Shapes, shape_lines
from remediation.core.recordsbatch import records_batch
from remediation.core.text import byte_counts
from remediation.jsonrecords import JsonlRecords, record_from_obj, unreadable
from remediation.jsonvalues import parse_line
from remediation.records import UsageRecord

# Layouts matched by their pattern, before the rest of a batch is read by shape: those that
# read at least `HOT_SHARE` of a batch, most lines first (each is a regex pass per batch over
# the lines with its number of quotes; the grammar and the shapes are three passes over the
# rest: `varied` JSON Lines, whose minor layouts each hold 5-20 % of the rows, were read
# faster matched than by shape).
MAX_LAYOUTS = 8
# A slice of lines holds at most this many bytes of them (and at most `size` lines): lines of
# a few hundred bytes never reach it, long ones (a 10 kB error message, a 2 MB note) are cut
# into fewer lines a batch. Without it a batch was 8,192 lines of whatever length: 50 lines of
# 2 MB took 944 MB (the same rows as CSV 110 MB).
SLICE_BYTES = 4 << 20
HOT_SHARE = 0.05


def jsonl_batches(records: JsonlRecords, size: int, ahead: Ahead | None = None) -> Iterator[Batch]:
    """The rows of a JSON Lines input as batches of at most `size` rows (`ahead`: a thread to
    match the next batch's lines on)."""
    with records.text() as text:
        yield from JsonlBatches(text, records.depth, size, ahead)


@dataclass(slots=True)
class _Cut:
    """A batch's lines as text, before they are matched."""

    numbers: list[int]
    early: dict[int, UsageRecord]  # lines refused unread, as their records
    text: pa.Array  # the lines (refused ones empty), as the layouts match them
    quotes: np.ndarray[Any, Any]  # per line
    left: np.ndarray[Any, Any]  # lines still to read (all but the refused ones)
    unread: np.ndarray[Any, Any]  # the lines of `early`
    raw: pa.Array  # the lines as they came (`text`, unless `matchable` respelled them)
    started: Started | None = None  # the match begun on `ahead`'s thread
    shaping: Shaping | None = None  # the shapes found on `ahead`'s thread


class JsonlBatches:
    """The rows of a JSON Lines text stream as batches of at most `size` rows.

    With `ahead`, the next batch's lines are cut and matched against the layout most lines
    had, on `ahead`'s thread (RE2 and the split at the quotes let go of the GIL), while this
    batch is built and used: one batch more is held, as Arrow text only."""

    def __init__(
        self,
        text: io.TextIOWrapper | None,
        depth: int,
        size: int,
        ahead: Ahead | None = None,
        *,
        source: Iterator[Lines] | None = None,
        record: Callable[[int, str], UsageRecord] | None = None,
        matchable: Callable[[pa.Array], pa.Array] | None = None,
    ) -> None:
        """`text`'s lines, or those of `source` (a JSON array's elements: then `record` reads
        one no layout matches, as `_record` reads a JSON Lines line, and `matchable` gives the
        texts the layouts are learned from and matched against, the same JSON spelled without
        what no layout holds; `record` gets the text as it came)."""
        self.depth, self.size, self.ahead = depth, size, ahead
        if source is None:
            assert text is not None
            source = line_arrays(text)
        self.source, self.record, self.matchable = source, record or self._record, matchable
        self.layouts: list[Layout] = []  # the hot ones (`_keep_hot`)
        self.shapes = Shapes(depth)
        self.hits: dict[str, int] = {}  # lines matched per layout

    def __iter__(self) -> Iterator[Batch]:
        held: list[_Cut] = []  # popped into `_batch`: nothing of a cut is kept while in use
        for numbers, lines, refused in self._slices():
            held.append(self._cut(numbers, lines, refused))
            del lines
            if len(held) > (0 if self.ahead is None else 1):
                yield from self._batches(held.pop(0))
        while held:
            yield from self._batches(held.pop(0))

    def _slices(self) -> Iterator[tuple[list[int], pa.Array, dict[int, str]]]:
        """(line numbers, lines, refused: place -> why) of at most `size` lines and
        `SLICE_BYTES` bytes of them (a longer line alone) at a time (slices of the blocks'
        lines, concatenated)."""
        numbers: list[int] = []
        pieces: list[pa.Array] = []  # the lines not yet handed out, by block
        held = held_bytes = 0
        refused: dict[int, str] = {}  # place among the held lines -> why that line was refused
        for block in self.source:
            refused.update({held + at: why for at, why in block.refused.items()})
            numbers += block.numbers
            pieces.append(block.text)
            held += len(block.text)
            held_bytes += _text_bytes(block.text)
            if held < self.size and held_bytes < SLICE_BYTES:
                continue
            lines = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
            ends = _line_ends(lines)
            done = 0
            while held - done >= self.size or ends[held] - ends[done] >= SLICE_BYTES:
                fits = int(np.searchsorted(ends, ends[done] + SLICE_BYTES, "right")) - 1
                end = min(done + self.size, max(fits, done + 1))
                first = {at - done: why for at, why in refused.items() if done <= at < end}
                yield numbers[done:end], lines.slice(done, end - done), first
                done = end
            # the rest copied: the batches' lines go with the last of them
            rest = pa.concat_arrays([lines.slice(done)])
            numbers, pieces, held = numbers[done:], [rest], held - done
            held_bytes = int(ends[-1] - ends[done])
            refused = {at - done: why for at, why in refused.items() if at >= done}
            del lines, rest
        if held:
            yield numbers, pa.concat_arrays(pieces), refused

    def _cut(self, numbers: list[int], lines: pa.Array, refused: dict[int, str]) -> _Cut:
        early = {at: unreadable(numbers[at], lines[at].as_py(), why) for at, why in refused.items()}
        text = lines
        if early:  # matched by no layout, read by no one: their records are made here
            blank = np.zeros(len(lines), bool)
            blank[list(early)] = True
            text = pc.if_else(pa.array(blank), pa.scalar("", pa.string()), lines)
        unread = np.zeros(len(lines), bool)
        unread[list(early)] = True
        left = ~unread
        raw = text
        if self.matchable is not None:
            text = self.matchable(text)
        # A line of a layout holds as many quotes as it: only those lines are matched.
        quotes = byte_counts(text, ord('"'))
        cut = _Cut(numbers, early, text, quotes, left, unread, raw)
        if self.ahead is not None and self.layouts:
            pattern, pieces = self.layouts[0].pattern, self.layouts[0].pieces
            candidates = np.flatnonzero(left & (quotes == pieces - 1))
            if len(candidates):
                result = self.ahead(matched, pattern, text, candidates).result
                cut.started = Started(pattern, candidates, result)
        if self.ahead is not None:
            # lines no kept layout can match (not their number of quotes) are read by shape:
            # their shapes found there too (a regex pass over each line, ~20 % of reading a
            # file of many layouts, on a thread that mostly waits for them: the writer's)
            counts = [layout.pieces - 1 for layout in self.layouts]
            unmatched = np.flatnonzero(left & ~np.isin(quotes, counts))
            if len(unmatched):
                cut.shaping = Shaping(unmatched, self.ahead(shape_lines, text, unmatched).result)
        return cut

    def _batches(self, cut: _Cut) -> Iterator[Batch]:
        """A cut's rows as one batch, or as consecutive batches when its cells would pass
        `MAX_BATCH_CELLS` or `MAX_BATCH_KEYS` (rows that each name keys of their own)."""
        text, quotes, left = cut.text, cut.quotes, cut.left
        matched: list[tuple[np.ndarray[Any, Any], Batch]] = []
        for layout in self.layouts:
            fits = left & (quotes == layout.pieces - 1)
            left[self._match(layout, text, fits, cut.numbers, matched, cut.started)] = False
        groups, keys, shaped = row_keys(matched, text, cut.shaping)
        for span in cell_spans(groups, keys):
            yield self._batch(cut, within(matched, span), span, shaped)

    def _batch(
        self,
        cut: _Cut,
        parts: list[tuple[np.ndarray[Any, Any], Batch]],
        span: range,
        shaped: LineShapes | None,
    ) -> Batch:
        """The rows of `span`: `parts` (the lines layouts matched), and the rest read here
        (`shaped`: the shapes of the lines no layout matched)."""
        numbers, early, text, raw, left = cut.numbers, cut.early, cut.text, cut.raw, cut.left
        here = slice(span.start, span.stop)
        if left[here].any():  # the rest by shape, and the layouts most of a batch had kept
            lines = span.start + np.flatnonzero(left[here])
            read = self.shapes.read(text, lines, numbers, shaped)
            if read.batch is not None:
                left[read.lines] = False
                parts.append((read.lines, read.batch))
                self._keep_hot(read.hits, len(span))
        # The layouts most lines had are tried first in the next batch.
        self.layouts.sort(key=lambda layout: -self.hits.get(layout.pattern, 0))
        # The rest, in their places: lines read by the line reader, and lines refused unread.
        rest = span.start + np.flatnonzero(left[here] | cut.unread[here])
        if len(rest):
            lines = raw.take(pa.array(rest)).to_pylist()
            records = [
                early[i] if i in early else self.record(numbers[i], line)
                for i, line in zip(rest.tolist(), lines, strict=True)
            ]
            parts.append((rest, records_batch(records)))
        if len(parts) == 1:
            return parts[0][1]
        every = np.concatenate([p for p, _ in parts])
        both = concat_batches([b for _, b in parts])
        return both.take(np.argsort(every, kind="stable"))

    def _keep_hot(self, read: dict[Layout, int], lines: int) -> None:
        """Layouts that read at least `HOT_SHARE` of a batch's lines are matched first from
        the next batch on (at most `MAX_LAYOUTS`); every layout's lines are counted."""
        for layout, count in read.items():
            self.hits[layout.pattern] = self.hits.get(layout.pattern, 0) + count
            hot = count >= HOT_SHARE * lines and len(self.layouts) < MAX_LAYOUTS
            if hot and layout not in self.layouts:
                self.layouts.append(layout)

    def _record(self, number: int, line: str) -> UsageRecord:
        obj, refusal = parse_line(line, self.depth)
        if refusal is not None:
            return unreadable(number, line, f"line {refusal}")
        return record_from_obj(number, obj)

    def _match(
        self,
        layout: Layout,
        text: pa.Array,
        unclaimed: np.ndarray[Any, Any],
        numbers: Sequence[int],
        parts: list[tuple[np.ndarray[Any, Any], Batch]],
        started: Started | None = None,
    ) -> np.ndarray[Any, Any]:
        """The lines of `layout` among the `unclaimed` (a mask), their rows added to `parts`
        (values split out at the quotes); `started`: a match already under way, used when it
        is this layout's over these lines."""
        candidates = np.flatnonzero(unclaimed)
        if not len(candidates):
            return candidates
        if started is not None and started.serves(layout.pattern, candidates):
            rows, pieces = started.result()
        else:
            rows, pieces = matched(layout.pattern, text, candidates)
        if not len(rows):
            return rows
        assert len(pieces) == len(rows) * layout.pieces, "a matched line splits as its layout"
        base = np.arange(len(rows), dtype=np.int64) * layout.pieces
        values = []
        keep = np.ones(len(rows), bool)
        for leaf in layout.leaves:
            value = pieces.take(pa.array(base + leaf.piece))
            if leaf.kind != Kind.TEXT:
                stop = leaf.stop if leaf.stop is not None else sys.maxsize
                value = pc.utf8_slice_codeunits(value, leaf.start, stop)
            if leaf.kind == Kind.INT:  # a number the line reader reads (and keeps) as it is
                keep &= mask(pc.less_equal(pc.utf8_length(value), MAX_NUMBER_CHARS))
                keep &= in_range(value)
            values.append(value)
        if not keep.all():
            kept = pa.array(keep)
            values = [v.filter(kept) for v in values]
            rows = rows[keep]
        self.hits[layout.pattern] = self.hits.get(layout.pattern, 0) + len(rows)
        parts.append((rows, layout_batch(layout, values, np.asarray(numbers)[rows])))
        return rows


def _text_bytes(text: pa.Array) -> int:
    """The bytes of a string array's values."""
    return int(pc.sum(pc.binary_length(text)).as_py() or 0)


def _line_ends(lines: pa.Array) -> np.ndarray[Any, Any]:
    """0, then where each line ends, in bytes from the first line's start."""
    lengths = pc.binary_length(lines).fill_null(0).to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
