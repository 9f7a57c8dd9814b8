"""JSON Lines read into batches of columns, most lines without `json.loads`.

Lines of a failed-records file mostly share a few layouts: the same keys in the same order,
each value a string, a number, true, false or null, written by one serializer. The first line
of a layout is parsed by `json.loads` (`jsonreaders`) and, when its text is exactly what
`json.dumps` writes for it (compact separators, its default ones, or those it uses with
`indent`), becomes a pattern: the line's text with each value replaced by what such a value
may look like (a string without escapes, quotes or control characters; an integer or a float as
`json.dumps` writes one; true or false; null: these three in the payload and other keys of the
row only). Later lines holding as many quotes are matched against it by Arrow (RE2, a whole
batch at once); a matched line is split at its quotes, so each value sits at a known place, and
lands in columns with the kind `json.loads` would have given it (a float only when `repr` gives
its text back). A line no layout matches, or one whose values need decoding (escapes, nested
values beyond `payload` and `error`, exponents, a boolean or null as the identifier,
timestamp, event name or error), is read by the line reader, unchanged (a file whose every line
held a null took 13.0 s for 1M rows there, against 3.6 s matched): `parse_line` and
`record_from_obj`, and its row joins the batch in its place. So a line matched here reads
exactly as it reads there; `test_jsonl_read` holds the two together, records and column texts.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.columns import (
    Batch,
    Column,
    KeyOrders,
    Kind,
    concat_batches,
    from_records,
)
from remediation.core.csvread import Ahead
from remediation.core.jsonllines import Lines, line_arrays
from remediation.core.text import byte_counts
from remediation.jsonreaders import (
    JSON_KNOWN,
    JsonlRecords,
    parse_line,
    record_from_obj,
    unreadable,
)
from remediation.records import ERROR_FIELDS, MFX_PREFIX, UsageRecord, resolve_error

MAX_LAYOUTS = 16  # patterns kept per file
MAX_NUMBER_CHARS = 1000
LEARN_PER_BATCH = 4  # new patterns tried per batch (each one is a pass over the unmatched)
# What a value may look like in a matched line: a string with no escape, quote or control
# character; a number: an integer as json.dumps writes one, or a float without exponent (a
# float's text must be what `repr` gives back, and a number at most `MAX_NUMBER_CHARS` long,
# json.loads refusing more than 4,300 digits: both checked once split out). Integers and
# floats share a slot (kind INT in a layout; FLOAT per row, where the text has a point), so
# one layout serves a column holding both. No counted repetition: RE2 unrolls it, and a
# pattern holding `{0,999}` took 7 ms to compile, once per batch and layout.
_SLOTS = {
    Kind.TEXT: '[^"\\\\\\x00-\\x1f]*',  # between the quotes around it
    Kind.INT: "(?:0|-?[1-9][0-9]*|-?(?:0|[1-9][0-9]*)\\.[0-9]+)",
    Kind.BOOL: "(?:true|false)",
    Kind.NULL: "null",
}
# Groups whose values may be true, false or null in a layout: the record path keeps them as
# typed values there (`present_text`); the identifier, event name and timestamp it reads as
# text or absent, and the error fields through `resolve_error`, so lines with such values
# there are left to it.
_LITERAL_GROUPS = ("payload", "extra", "ignored")
# json.dumps's separators: compact, its default, and the pair it uses with `indent` (a
# pretty-printed JSON array's elements, their line breaks and indents taken out: `jsonarray`)
_STYLES = ((",", ":"), (", ", ": "), (",", ": "))


@dataclass(frozen=True)
class _Leaf:
    """One value of a layout: where it sits in the record, what kind `json.loads` gives it,
    and where its text is in a matched line split at its quotes."""

    group: str  # "identifier", "timestamp", "event_name", "payload", "extra" or "error"
    key: str
    kind: Kind  # TEXT, or INT: a number
    path: tuple[str, ...]  # its keys from the record's top
    piece: int = 0  # which piece of the line split at '"'
    start: int = 0  # a number: where it starts in its piece,
    stop: int | None = None  # and where it stops (counted from the piece's end)


@dataclass(frozen=True)
class Layout:
    pattern: str  # the whole line (RE2, no captures: matched by its DFA)
    leaves: tuple[_Leaf, ...]
    pieces: int  # pieces of a matched line split at '"'
    payload_keys: tuple[str, ...]
    extra_keys: tuple[str, ...]


def learn(obj: object, line: str, depth: int) -> Layout | None:
    """The layout of a decoded line, or None when its text is not one `json.dumps` writes
    for it or it holds a value this reader leaves to the record path."""
    if type(obj) is not dict or not obj:
        return None
    for separators in _STYLES:
        if json.dumps(obj, ensure_ascii=False, separators=separators) == line:
            break
    else:
        return None
    comma, colon = separators
    tokens: list[str | _Leaf] = ["{"]
    payload_keys: tuple[str, ...] = ()
    extra_keys: list[str] = []
    nested = False
    for at, (key, value) in enumerate(obj.items()):
        if not _plain(key):
            return None
        tokens.append(f'{comma if at else ""}"{key}"{colon}')
        if key == "payload" or (key == "error" and type(value) is dict):
            if type(value) is not dict:
                return None
            nested = True
            tokens.append("{")
            for inner_at, (inner_key, inner_value) in enumerate(value.items()):
                kind = _kind(inner_value)
                if kind is None or not _plain(inner_key):
                    return None
                tokens.append(f'{comma if inner_at else ""}"{inner_key}"{colon}')
                group = "payload" if key == "payload" else "error"
                if kind in _LITERALS and group not in _LITERAL_GROUPS:
                    return None
                tokens += _slot(_Leaf(group, inner_key, kind, (key, inner_key)))
            tokens.append("}")
            if key == "payload":
                payload_keys = tuple(value)
            continue
        kind = _kind(value)
        if kind is None:
            return None
        if key in ERROR_FIELDS:
            group = "error"
        elif key in JSON_KNOWN:
            group = key
        elif key.startswith(MFX_PREFIX):
            group = "ignored"  # never read: the reader drops our own annotations
        else:
            group = "extra"
            extra_keys.append(key)
        if kind in _LITERALS and group not in _LITERAL_GROUPS:
            return None
        tokens += _slot(_Leaf(group, key, kind, (key,)))
    tokens.append("}")
    if (2 if nested else 1) > depth:
        return None
    pattern = "^" + "".join(_pattern(t) for t in tokens) + "$"
    leaves, pieces = _placed(tokens)
    return Layout(pattern, leaves, pieces, payload_keys, tuple(extra_keys))


def _slot(leaf: _Leaf) -> list[str | _Leaf]:
    """A value's tokens: a string between its quotes, a number alone."""
    return ['"', leaf, '"'] if leaf.kind == Kind.TEXT else [leaf]


def _pattern(token: str | _Leaf) -> str:
    if isinstance(token, _Leaf):
        return _SLOTS[token.kind]
    return _literal(token)


def _placed(tokens: list[str | _Leaf]) -> tuple[tuple[_Leaf, ...], int]:
    """The leaves with their place in a line split at '"', and how many pieces it has."""
    piece, length = 0, 0  # the current piece, and how long it is so far
    leaves: list[_Leaf] = []
    open_number: _Leaf | None = None  # a number whose piece has not ended yet
    for token in tokens:
        if isinstance(token, _Leaf):
            if token.kind == Kind.TEXT:
                leaves.append(replace(token, piece=piece))
            else:
                open_number, length = replace(token, piece=piece, start=length), 0
            continue
        for char in token:
            if char != '"':
                length += 1
                continue
            if open_number is not None:
                leaves.append(replace(open_number, stop=-length if length else None))
                open_number = None
            piece, length = piece + 1, 0
    if open_number is not None:
        leaves.append(replace(open_number, stop=-length if length else None))
    return tuple(leaves), piece + 1


def _kind(value: object) -> Kind | None:
    """The kind of a value this reader takes, or None."""
    if type(value) is str:
        return Kind.TEXT if _plain(value) else None
    if type(value) is int:
        return Kind.INT
    if type(value) is float:
        text = repr(value)
        return Kind.INT if "e" not in text and "n" not in text else None  # inf, nan
    if type(value) is bool:
        return Kind.BOOL
    return Kind.NULL if value is None else None


_LITERALS = (Kind.BOOL, Kind.NULL)


def _plain(text: str) -> bool:
    """Written by json.dumps as itself in quotes (no escape, no control character)."""
    return not any(c in '"\\' or ord(c) < 0x20 for c in text)


def _literal(text: str) -> str:
    """`text` as an RE2 literal (ASCII punctuation as hex escapes, the rest as is)."""
    return "".join(
        c if c.isalnum() or c == "_" or ord(c) > 0x7F else f"\\x{{{ord(c):x}}}" for c in text
    )


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
    raw: pa.Array  # the lines as they came (`text`, unless `matchable` respelled them)
    started: _Started | None = None  # the match begun on `ahead`'s thread


_Matched = tuple[np.ndarray[Any, Any], pa.Array]  # lines of a layout, and their pieces


class _Started(NamedTuple):
    """A match of `candidates` against `pattern` under way; `result` waits for it."""

    pattern: str
    candidates: np.ndarray[Any, Any]
    result: Callable[[], _Matched]

    def serves(self, pattern: str, candidates: np.ndarray[Any, Any]) -> bool:
        return pattern == self.pattern and np.array_equal(candidates, self.candidates)


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
        self.layouts: list[Layout] = []
        self.hits: dict[str, int] = {}  # lines matched per layout

    def __iter__(self) -> Iterator[Batch]:
        held: list[_Cut] = []  # popped into `_batch`: nothing of a cut is kept while in use
        for numbers, lines, refused in self._slices():
            held.append(self._cut(numbers, lines, refused))
            del lines
            if len(held) > (0 if self.ahead is None else 1):
                yield self._batch(held.pop(0))
        while held:
            yield self._batch(held.pop(0))

    def _slices(self) -> Iterator[tuple[list[int], pa.Array, dict[int, str]]]:
        """(line numbers, lines, refused: place -> why) of at most `size` lines at a time
        (slices of the blocks' lines, concatenated)."""
        numbers: list[int] = []
        pieces: list[pa.Array] = []  # the lines not yet handed out, by block
        held = 0
        refused: dict[int, str] = {}  # place among the held lines -> why that line was refused
        for block in self.source:
            refused.update({held + at: why for at, why in block.refused.items()})
            numbers += block.numbers
            pieces.append(block.text)
            held += len(block.text)
            if held < self.size:
                continue
            lines = pa.concat_arrays(pieces) if len(pieces) > 1 else pieces[0]
            done = 0
            while held - done >= self.size:
                end = done + self.size
                first = {at - done: why for at, why in refused.items() if done <= at < end}
                yield numbers[done:end], lines.slice(done, self.size), first
                done = end
            # the rest copied: the batches' lines go with the last of them
            rest = pa.concat_arrays([lines.slice(done)])
            numbers, pieces, held = numbers[done:], [rest], held - done
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
        left = np.ones(len(lines), bool)
        left[list(early)] = False
        raw = text
        if self.matchable is not None:
            text = self.matchable(text)
        # A line of a layout holds as many quotes as it: only those lines are matched.
        quotes = byte_counts(text, ord('"'))
        cut = _Cut(numbers, early, text, quotes, left, raw)
        if self.ahead is not None and self.layouts:
            pattern, pieces = self.layouts[0].pattern, self.layouts[0].pieces
            candidates = np.flatnonzero(left & (quotes == pieces - 1))
            if len(candidates):
                result = self.ahead(_matched, pattern, text, candidates).result
                cut.started = _Started(pattern, candidates, result)
        return cut

    def _batch(self, cut: _Cut) -> Batch:
        numbers, early, text, raw = cut.numbers, cut.early, cut.text, cut.raw
        quotes, left = cut.quotes, cut.left
        parts: list[tuple[np.ndarray[Any, Any], Batch]] = []
        for layout in self.layouts:
            fits = left & (quotes == layout.pieces - 1)
            left[self._match(layout, text, fits, numbers, parts, cut.started)] = False
        tried = 0
        after = 0  # lines before this one were tried, or matched
        while tried < LEARN_PER_BATCH and len(self.layouts) < MAX_LAYOUTS:
            unmatched = np.flatnonzero(left[after:])
            if not len(unmatched):
                break
            first = after + int(unmatched[0])
            after, tried = first + 1, tried + 1
            line = text[first].as_py()
            obj, refusal = parse_line(line, self.depth)
            learned = learn(obj, line, self.depth) if refusal is None else None
            if learned is not None:
                self.layouts.append(learned)
                fits = left & (quotes == learned.pieces - 1)
                left[self._match(learned, text, fits, numbers, parts)] = False
        # The layouts most lines had are tried first in the next batch.
        self.layouts.sort(key=lambda layout: -self.hits.get(layout.pattern, 0))
        # The rest, in their places: lines read by the line reader, and lines refused unread.
        rest = np.flatnonzero(left | np.isin(np.arange(len(text)), list(early)))
        if len(rest):
            lines = raw.take(pa.array(rest)).to_pylist()
            records = [
                early[i] if i in early else self.record(numbers[i], line)
                for i, line in zip(rest.tolist(), lines, strict=True)
            ]
            parts.append((rest, from_records(records)))
        if len(parts) == 1:
            return parts[0][1]
        every = np.concatenate([p for p, _ in parts])
        both = concat_batches([b for _, b in parts])
        return both.take(np.argsort(every, kind="stable"))

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
        started: _Started | None = None,
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
            rows, pieces = _matched(layout.pattern, text, candidates)
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
            if leaf.kind == Kind.INT:  # a float: only the text repr() gives back reads the same
                keep &= _mask(pc.less_equal(pc.utf8_length(value), MAX_NUMBER_CHARS))
                dotted = np.flatnonzero(_dotted(value))
                if len(dotted):
                    texts = value.take(pa.array(dotted)).to_pylist()
                    keep[dotted] &= [repr(float(t)) == t for t in texts]
            values.append(value)
        if not keep.all():
            kept = pa.array(keep)
            values = [v.filter(kept) for v in values]
            rows = rows[keep]
        self.hits[layout.pattern] = self.hits.get(layout.pattern, 0) + len(rows)
        parts.append((rows, _layout_batch(layout, values, np.asarray(numbers)[rows])))
        return rows


def _matched(pattern: str, text: pa.Array, candidates: np.ndarray[Any, Any]) -> _Matched:
    """The `candidates` lines that match `pattern`, and those lines split at their quotes:
    Arrow kernels that let go of the GIL (this runs on `ahead`'s thread too)."""
    subset = text if len(candidates) == len(text) else text.take(pa.array(candidates))
    matched = pc.match_substring_regex(subset, pattern)
    rows: np.ndarray[Any, Any] = candidates[
        np.asarray(matched.to_numpy(zero_copy_only=False), bool)
    ]
    if not len(rows):
        return rows, pa.array([], pa.string())
    lines = text if len(rows) == len(text) else text.take(pa.array(rows))
    return rows, pc.list_flatten(pc.split_pattern(lines, '"'))


def _layout_batch(layout: Layout, values: list[pa.Array], numbers: np.ndarray[Any, Any]) -> Batch:
    n = len(numbers)
    columns: dict[tuple[str, str], Column] = {}
    errors: list[tuple[_Leaf, pa.Array]] = []
    for leaf, texts in zip(layout.leaves, values, strict=True):
        if leaf.group == "error":
            errors.append((leaf, texts))
            continue
        kinds = None
        if leaf.kind == Kind.INT:
            kinds = np.where(_dotted(texts), np.uint8(Kind.FLOAT), np.uint8(Kind.INT))
        elif leaf.kind in _LITERALS:  # "true", "false" or "null", as `present_text` has them
            kinds = np.full(n, leaf.kind, np.uint8)
        if leaf.group in ("identifier", "event_name"):
            kinds = None  # read as text (`str()` of a number), "" as absent
            texts = pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)
        columns[(leaf.group, leaf.key)] = Column(texts, kinds)
    code, message = _errors(errors, n)

    def core(name: str) -> Column:
        return columns.get((name, name)) or Column.absent(n)

    return Batch(
        numbers.astype(np.int64),
        core("identifier"),
        core("timestamp"),
        core("event_name"),
        {key: columns[("payload", key)] for key in layout.payload_keys},
        {key: columns[("extra", key)] for key in layout.extra_keys},
        code,
        message,
        pa.nulls(n, pa.string()),
        KeyOrders.same((layout.payload_keys, layout.extra_keys), n),
    )


def _dotted(numbers: pa.Array) -> np.ndarray[Any, Any]:
    """Which numbers are floats (their text has a point)."""
    return _mask(pc.match_substring(numbers, "."))


def _mask(flags: pa.Array) -> np.ndarray[Any, Any]:
    return np.asarray(flags.to_numpy(zero_copy_only=False), bool)


def _errors(errors: list[tuple[_Leaf, pa.Array]], n: int) -> tuple[pa.Array, pa.Array]:
    """(code, message) of each row, by `resolve_error`, once per distinct set of values."""
    if not errors:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
    keyed = (
        errors[0][1]
        if len(errors) == 1
        else pc.binary_join_element_wise(*[values for _, values in errors], "\x1f")
    )
    encoded = pc.dictionary_encode(keyed)
    codes, messages = [], []
    for joined in encoded.dictionary.to_pylist():
        texts = [joined] if len(errors) == 1 else joined.split("\x1f")
        fields: dict[str, Any] = {}
        for (leaf, _), text in zip(errors, texts, strict=True):
            value: object = text
            if leaf.kind == Kind.INT:
                value = float(text) if "." in text else int(text)
            if len(leaf.path) == 2:
                fields.setdefault(leaf.path[0], {})[leaf.path[1]] = value
            else:
                fields[leaf.path[0]] = value
        code, message = resolve_error(fields)
        codes.append(code)
        messages.append(message)
    indices = encoded.indices
    return (
        pa.array(codes, pa.string()).take(indices),
        pa.array(messages, pa.string()).take(indices),
    )
