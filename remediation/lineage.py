"""Lineage of an input's identifiers: which of them a run of ours wrote, traced back through the
correction audit (a lookup the service answers from the database), and which originals of the
input a derived identifier must not equal (found by a scan of the input's bytes first, and,
for an input that holds some rows of its source only, asked of the source's other rows).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from remediation.identifiers import (
    MAX_IDENTIFIER,
    Ancestor,
    Identifiers,
    Lineage,
    hashed_identifier,
    plain_suffix,
)

SCAN_BLOCK = 1 << 20
MAX_DEPTH = 64  # generations traced back at most (each one is a re-send that failed again)

# An output's lineage (S3 user metadata, or a `file://` bucket's sidecar), as
# `outputs.lineage` writes it
GENERATION_KEY = "mfx-generation"
KIND_KEY = "mfx-kind"
IDENTIFIERS_KEY = "mfx-identifiers"
KEPT = "kept"  # IDENTIFIERS_KEY of an output whose rows kept the identifiers they came with
MAX_GENERATION_DIGITS = 5


class ObjectLineage(NamedTuple):
    """What an object's metadata says of its rows."""

    generation: int  # the run of ours that wrote it (0: none, or not ours)
    derived: bool  # its rows carry identifiers that run derived (`-mfx<generation>`)


def object_lineage(metadata: Mapping[str, object]) -> ObjectLineage:
    """The lineage an object's metadata gives. Only a corrected output's rows carry derived
    identifiers: a quarantine file's rows (edited and fed back in) keep the identifiers they
    came with, as do the rows of a run that kept them (`--identifiers keep`); stripping
    `-mfx1` off such a row's own `c-mfx1` sent it as `c-mfx2`, the identifier of the row
    `c` of the same chain (two rows, one identifier: Stripe keeps one). An output written
    before the kind was recorded is taken as a corrected one."""
    value = str(metadata.get(GENERATION_KEY, ""))
    # ASCII digits of a generation a chain of runs can reach; anything else (forged, `²`,
    # past the run table's INTEGER) is no lineage of ours
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_GENERATION_DIGITS):
        return ObjectLineage(0, False)
    kind = str(metadata.get(KIND_KEY, "corrected"))
    kept = str(metadata.get(IDENTIFIERS_KEY, "")) == KEPT
    return ObjectLineage(int(value), kind == "corrected" and not kept)


@dataclass(frozen=True, slots=True)
class Parent:
    """What the correction audit says about an identifier a correction of ours wrote."""

    identifier: str  # the row's identifier in that run (`row_identifier` if it had none)
    code: str  # the code it was corrected for
    generation: int  # the generation of that run


# identifiers -> the parents the correction audit knows of (the service asks the database)
ParentLookup = Callable[[list[str]], Mapping[str, Parent]]
# identifiers -> those of them rows of the input's source hold (the service asks the database)
HeldLookup = Callable[[list[str]], Collection[str]]
HELD_BATCH = 10_000  # rows of the input whose derived identifiers are asked of at once


def run_generation(generation: int, ancestors: Mapping[str, Ancestor]) -> int:
    """The generation a run writes: `generation` (1 + its source object's, per the object's
    metadata), or 1 + the highest generation that lineage says wrote one of its input's
    identifiers, whichever is higher. An input whose object names no generation (an import
    set naming no object, a failed file read from Stripe's copy) may still hold rows a run of
    ours wrote: re-sent in that run's generation, a corrected row went out under the very
    identifier that had just failed (`abc-mfx1` again), which Stripe drops as a duplicate
    within a day, and the audit then named two corrections as its parent."""
    written = max((ancestor.generation for ancestor in ancestors.values()), default=0)
    return max(generation, written + 1)


def trace_ancestors(
    identifiers: Iterable[str], input_generation: int, parents: ParentLookup, batch: int = 500
) -> dict[str, Ancestor]:
    """Ancestors of an input's identifiers that lineage says we wrote.

    `input_generation` is the generation of the object the input came from, per its metadata
    (0: unknown or not ours). Each step goes one generation back: to the identifier the audit
    says a correction was made for (and the generation of that run), else, only while the
    object's lineage gives the generation (a row re-sent unchanged by a run before the audit
    listed such rows, `core.resent`), to what is left after removing the exact suffix that
    generation appended (`-mfx<g>`, or `-r<g>` for outputs of the earlier rule). Generations
    come from lineage, never from a number read out of the identifier. (A row re-sent
    unchanged under the hashed form leads to `<first 80>-<hash>` as its original: the audit
    holds no more; still deterministic.)
    """
    found: dict[str, Ancestor] = {}
    pending = iter(identifiers)
    while chunk := list(islice(pending, batch)):
        found.update(_trace_chunk(chunk, input_generation, parents))
    return found


@dataclass(slots=True)
class _Trace:
    at: str  # traced back to here
    generation: int  # the generation that wrote `at` (0: unknown)
    code: str | None = None
    wrote: int = 0  # the generation that wrote the traced identifier (0: not ours)


def _trace_chunk(chunk: list[str], generation: int, parents: ParentLookup) -> dict[str, Ancestor]:
    known = parents(sorted(set(chunk)))
    if generation < 1:
        # Without a generation from the object's lineage only the audit moves an identifier
        # back: one it has no parent for is an original (most of a first run's input).
        chunk = [identifier for identifier in chunk if identifier in known]
    else:
        # With one, an identifier the audit has no parent for moves back only by the suffix
        # that generation appended (`_step`): one without it is an original, and is left out
        # before any trace is made (an input of 1M such originals: 6.3-7.0 s of lineage when
        # each was traced, 3.0-3.4 s without).
        suffixes = (plain_suffix(generation), f"-r{generation}")
        chunk = [i for i in chunk if i in known or i.endswith(suffixes)]
    traces = {identifier: _Trace(identifier, generation) for identifier in dict.fromkeys(chunk)}
    moving = set(traces)
    for depth in range(MAX_DEPTH):
        if not moving:
            break
        if depth:  # the first step's parents were looked up above
            known = parents(sorted({traces[identifier].at for identifier in moving}))
        for identifier in sorted(moving):
            if not _step(traces[identifier], known.get(traces[identifier].at)):
                moving.discard(identifier)
    return {
        identifier: Ancestor(trace.at, trace.code, trace.wrote)
        for identifier, trace in traces.items()
        if trace.wrote
    }


def _step(trace: _Trace, parent: Parent | None) -> bool:
    """One generation back; False when `trace.at` is an original."""
    first = not trace.wrote
    if parent is not None:
        written_in, previous = parent.generation, parent.identifier
    elif trace.generation >= 1:
        written_in, unsuffixed = trace.generation, _unsuffixed(trace.at, trace.generation)
        if unsuffixed is None:
            return False
        previous = unsuffixed
    else:
        return False
    if first:
        trace.wrote, trace.code = written_in, parent.code if parent is not None else None
    moved = previous != trace.at  # not when a run kept identifiers (`--identifiers keep`)
    trace.at, trace.generation = previous, written_in - 1
    return moved


def _unsuffixed(identifier: str, generation: int) -> str | None:
    for suffix in (plain_suffix(generation), f"-r{generation}"):
        if identifier.endswith(suffix) and len(identifier) > len(suffix):
            return identifier[: -len(suffix)]
    return None


def may_hold(path: Path, needle: bytes, escapes: bool = True) -> bool:
    """Whether the file's bytes hold `needle` (or, with `escapes`, a JSON `\\u` escape that
    could spell it)."""
    tail = b""
    anchor: int | None = None
    with open(path, "rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            if anchor is None:
                anchor = _rarest(needle, block)
            if _holds(block, needle, anchor) or needle in tail + block[: len(needle)]:
                return True
            if escapes and _escape(block, tail[-1:]):
                return True
            tail = block[-len(needle) :]
    return False


# Hits of the anchor byte a block's search checks one by one, and one more per this many
# bytes, before it searches the rest of the block for the needle itself.
ANCHOR_HITS = 16
ANCHOR_HIT_BYTES = 512


def _rarest(needle: bytes, sample: bytes) -> int:
    """The byte of `needle` met least often in `sample` (the first block): the anchor."""
    head = sample[:65536]
    return min(range(len(needle)), key=lambda at: head.count(needle[at : at + 1]))


def _holds(block: bytes, needle: bytes, anchor: int) -> bool:
    """`needle in block`, found by its `anchor`-th byte: one byte is found by memchr, far
    faster than the needle (whose last byte, a digit, is met everywhere: 0.19 s for the 246 MB
    of the bench's `varied` JSON Lines), and each place it is met is checked (the scan of that
    file 0.19-0.23 -> 0.09 s, of its CSV 0.12-0.23 -> 0.08 s; its `x` is met once in 2 KB). A
    block where the byte is met often is searched for the needle from there."""
    byte = needle[anchor : anchor + 1]
    budget = ANCHOR_HITS + len(block) // ANCHOR_HIT_BYTES
    at = block.find(byte, anchor)
    while at != -1:
        if block.startswith(needle, at - anchor):
            return True
        budget -= 1
        if not budget:
            return block.find(needle, at - anchor) != -1
        at = block.find(byte, at + 1)
    return False


def _escape(block: bytes, before: bytes) -> bool:
    """Whether `block` (after the byte `before`) holds a `\\u`: a backslash is looked for
    first, one byte being found ten times faster than two (memchr: 24 against 230 ms for a
    247 MB JSON Lines file)."""
    if b"\\" not in block and before != b"\\":
        return False
    return b"\\u" in block or b"\\u" in before + block[:1]


def reserved_originals(
    identifiers: Iterable[tuple[str | None, int]], ids: Identifiers
) -> frozenset[str]:
    """Originals of an input that end like a plain derived identifier of this generation."""
    return frozenset(
        original
        for identifier, row in identifiers
        if (original := ids.original(identifier, row)).endswith(ids.suffix)
    )


def held_elsewhere(
    rows: Iterable[tuple[str | None, int]],
    ids: Identifiers,
    held: HeldLookup,
    reserved: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """The identifiers of the input's source a derived identifier of this run could equal
    (`held`: those of the ones asked that its rows hold): each row's plain form, and the
    hashed form of a row that goes out hashed (its plain form too long, held, or `reserved`).
    An input holding some rows of its source only (a failed-records file) is not the whole
    "same input" of the identifier rule: `q`'s `q-mfx1` was the identifier of the source's
    own row `q-mfx1`, sent, and the corrected row, left out as sent before, was never billed."""
    found: set[str] = set()
    pending = iter(rows)
    while chunk := list(islice(pending, HELD_BATCH)):
        plain = {ids.original(identifier, row) + ids.suffix for identifier, row in chunk}
        found.update(held(sorted(p for p in plain if len(p) <= MAX_IDENTIFIER)))
        hashed = {
            hashed_identifier(p[: -len(ids.suffix)], ids.generation)
            for p in plain
            if len(p) > MAX_IDENTIFIER or p in found or p in reserved
        }
        if hashed:
            found.update(held(sorted(hashed)))
    return frozenset(found)


def input_lineage(
    path: Path,
    rows: Callable[[], Iterable[tuple[str | None, int]]],
    source: str,
    generation: int,
    ancestors: Mapping[str, Ancestor] | None = None,
    escapes: bool = True,
    elsewhere: HeldLookup | None = None,
) -> Lineage:
    """The lineage of the input at `path`; `rows` reads its (identifier, row number) pairs,
    only when the bytes could hold an original ending in this generation's suffix (`escapes`:
    spelt with JSON escapes too; a CSV file has none), or when `elsewhere` asks which derived
    identifiers of its rows other rows of its source hold (`held_elsewhere`)."""
    lineage = Lineage(ancestors or {})
    ids = Identifiers(source, generation, lineage, keep=False)
    reserved: frozenset[str] = frozenset()
    if may_hold(path, plain_suffix(generation).encode(), escapes):
        reserved = reserved_originals(rows(), ids)
    if elsewhere is not None:
        reserved |= held_elsewhere(rows(), ids, elsewhere, reserved)
    if not reserved:
        return lineage
    return Lineage(lineage.ancestors, reserved)
