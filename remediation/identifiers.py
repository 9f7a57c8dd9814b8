"""Identifiers of re-sent rows: `<original>-mfx<generation>`, from lineage, never from spelling.

A row written to a corrected output gets a deterministic identifier made from its ORIGINAL
identifier and the run's generation (1 + the generation of the object it came from, and above
every generation that wrote one of its identifiers: `run_generation`). Both come from lineage
(the object's `mfx-generation` metadata, the correction audit in the database),
never from the identifier's text: `order-r099` or `inv-mfx3` are a customer's own identifiers
unless lineage says we wrote them. Exactly:
- `<original>-mfx<generation>`, or
- `<first 80 characters of the original>-<first 12 hex digits of sha256(original)>-mfx<generation>`
  when the plain form would exceed 100 characters (Stripe's limit), would equal an original
  identifier of the same input (`Lineage.reserved`), or could equal another original's hashed
  form (`may_be_hashed`: the original is shaped `<head>-<12 hex digits>`);
- when that hashed form is itself an original of the input, or another original of the run went
  out under it (two originals can be crafted to share 80 characters and 12 hex digits), the
  hex digits of sha256(original, NUL, 1), then (original, NUL, 2), ... instead: no two
  originals of one run ever share a derived identifier;
- a row without an identifier first gets `row-<first 16 hex digits of sha256(key, row)>`.
Deterministic and independent of the reference time, so re-uploading the same corrected file
can never bill twice. Outputs written before this rule (`-r<n>` suffixes) keep their
identifiers: lineage leads from them to their originals like from any output of ours.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

MAX_IDENTIFIER = 100  # Stripe's limit on a meter event identifier
HASHED_KEEP = 80  # characters of the original kept in the hashed form
SCAN_BLOCK = 1 << 20


def row_identifier(source: str, row_number: int) -> str:
    """The original identifier of a row that has none, from its object key and row number.

    Bytes hashed: the key in UTF-8 (lone surrogates kept as `surrogatepass` writes them), one
    NUL byte, then the row number in ASCII decimal digits. The row number holds no NUL, so the
    last NUL separates the pair unambiguously whatever the key holds.
    """
    data = source.encode("utf-8", "surrogatepass") + b"\x00" + str(row_number).encode("ascii")
    return "row-" + hashlib.sha256(data).hexdigest()[:16]


def plain_suffix(generation: int) -> str:
    return f"-mfx{generation}"


def derived_identifier(original: str, generation: int, reserved: Container[str] = ()) -> str:
    """The identifier a row of `original` is re-sent under in `generation` (see above): the
    plain form, unless it is too long, is reserved, or could be another original's hashed
    form (`may_be_hashed`); then the hashed form (`hashed_identifier`)."""
    suffix = f"-mfx{generation}"  # plain_suffix, inlined: once per row written
    plain = original + suffix
    if (
        len(plain) <= MAX_IDENTIFIER
        and plain not in reserved
        # `original[-13:-12]`: a `-` where a hashed stem has one (checked here: once per row)
        and (original[-13:-12] != "-" or not may_be_hashed(original, suffix, reserved))
    ):
        return plain
    return hashed_identifier(original, generation, reserved)


def hashed_identifier(original: str, generation: int, taken: Container[str] = ()) -> str:
    """`<first 80 characters>-<first 12 hex digits of sha256(original)>-mfx<generation>`; when
    that is `taken` (an original of the input, or another original's identifier in this run),
    the digits of sha256(original, NUL, 1), then of (original, NUL, 2), ... instead."""
    data = original.encode("utf-8", "surrogatepass")
    attempt = 0
    while True:
        salted = data + b"\x00" + str(attempt).encode() if attempt else data
        digest = hashlib.sha256(salted).hexdigest()[:HASH_DIGITS]
        candidate = f"{original[:HASHED_KEEP]}-{digest}{plain_suffix(generation)}"
        if candidate not in taken:
            return candidate
        attempt += 1


def may_be_hashed(original: str, suffix: str, reserved: Container[str] = ()) -> bool:
    """Whether `original + suffix` could be the hashed form of ANOTHER original of the input:
    `original` is `<head>-<12 hex digits>` where `head` is the first 80 characters of any
    longer original (80 characters long: that original cannot be known here), or a shorter
    original that goes out hashed itself (its plain form reserved, or again of this shape).
    Such an original goes out hashed too, so no plain identifier equals a hashed one (a crafted
    `<80 characters>-<sha256 digits>` equalled the identifier of the 97-character original
    it was cut from, and Stripe deduplicated one of the two rows)."""
    text = original
    while (head := _hashed_head(text)) is not None:
        if len(head) == HASHED_KEEP or head + suffix in reserved:
            return True
        if not reserved:
            return False  # a shorter head's own head is shorter still: never 80 characters
        text = head
    return False


def _hashed_head(text: str) -> str | None:
    """`<head>` of a text shaped `<head>-<12 lowercase hex digits>` that a hashed form could
    start with (at most 80 characters), else None."""
    at = len(text) - HASH_DIGITS - 1
    if at < 0 or at > HASHED_KEEP or text[at] != "-" or not _HASH_TAIL.fullmatch(text, at):
        return None  # the common case: no `-` where a hashed form has one
    return text[:at]


HASH_DIGITS = 12
_HASH_TAIL = re.compile(f"-[0-9a-f]{{{HASH_DIGITS}}}")


@dataclass(frozen=True, slots=True)
class Ancestor:
    """What lineage knows about an identifier of ours found in an input."""

    original: str  # the identifier the chain of re-sends started from
    code: str | None  # the code its row was corrected for (None: re-sent unchanged)
    generation: int  # the generation that wrote it


@dataclass(frozen=True, slots=True)
class Lineage:
    """Lineage of one input's identifiers: which of them we wrote (`ancestors`) and the
    originals of the input that a plain derived identifier must not equal (`reserved`)."""

    ancestors: Mapping[str, Ancestor] = field(default_factory=dict)
    reserved: frozenset[str] = frozenset()


class Identifiers:
    """Originals and derived identifiers of one run."""

    def __init__(self, source: str, generation: int, lineage: Lineage, keep: bool) -> None:
        self.source, self.generation, self.keep = source, generation, keep
        self.ancestors, self.reserved = lineage.ancestors, lineage.reserved
        self.suffix = plain_suffix(generation)
        self.longest_plain = MAX_IDENTIFIER - len(self.suffix)
        self.given: dict[int, int] = {}  # hashed identifiers given out (`_key`) -> `_owner`

    def original(self, identifier: str | None, row_number: int) -> str:
        if not identifier:
            return row_identifier(self.source, row_number)
        ancestor = self.ancestors.get(identifier)
        return ancestor.original if ancestor is not None else identifier

    def new(self, identifier: str | None, row_number: int) -> str | None:
        """The identifier a row is written under (`keep`: its own)."""
        if self.keep:
            return identifier
        original = self.original(identifier, row_number)
        derived = derived_identifier(original, self.generation, self.reserved)
        if len(derived) != len(original) + len(self.suffix) or not derived.startswith(original):
            return self._unshared(original, derived)  # a hashed form
        return derived  # the plain form: no other original's plain or hashed form

    def _unshared(self, original: str, derived: str) -> str:
        """`derived`, a hashed form, unless another original of this run went out under it
        (12 hex digits: two originals with the same first 80 characters can be crafted to
        share them); then `hashed_identifier`'s next form free of both."""
        owner = _owner(original)
        while self.given.setdefault(_key(derived), owner) != owner:
            taken = _Taken(self.reserved, self.given, owner)
            derived = hashed_identifier(original, self.generation, taken)
        return derived


def _key(identifier: str, size: int = 8) -> int:
    """A hashed identifier given out in a run as it is remembered: a few bytes, not its text
    (a run remembers every hashed identifier it gave out, none of its plain ones)."""
    data = identifier.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=size).digest())


def _owner(original: str) -> int:
    return _key(original, 16)


@dataclass(frozen=True, slots=True)
class _Taken:
    """Identifiers the original `owner` may not go out under: originals of the input
    (`reserved`), and hashed ones another original of the run went out under (`given`)."""

    reserved: frozenset[str]
    given: Mapping[int, int]
    owner: int

    def __contains__(self, identifier: object) -> bool:
        if not isinstance(identifier, str) or identifier in self.reserved:
            return True
        return self.given.get(_key(identifier), self.owner) != self.owner


# --- lineage from the database (through a lookup) and from the input ------------------------

MAX_DEPTH = 64  # generations traced back at most (each one is a re-send that failed again)


@dataclass(frozen=True, slots=True)
class Parent:
    """What the correction audit says about an identifier a correction of ours wrote."""

    identifier: str  # the row's identifier in that run (`row_identifier` if it had none)
    code: str  # the code it was corrected for
    generation: int  # the generation of that run


# identifiers -> the parents the correction audit knows of (the service asks the database)
ParentLookup = Callable[[list[str]], Mapping[str, Parent]]


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
    object's lineage gives the generation (a row re-sent unchanged, which the audit does not
    list), to what is left after removing the exact suffix that generation appended (`-mfx<g>`,
    or `-r<g>` for outputs of the earlier rule). Generations come from lineage, never from a
    number read out of the identifier. (A row re-sent unchanged under the hashed form leads to
    `<first 80>-<hash>` as its original: the audit holds no more; still deterministic.)
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


def input_lineage(
    path: Path,
    rows: Callable[[], Iterable[tuple[str | None, int]]],
    source: str,
    generation: int,
    ancestors: Mapping[str, Ancestor] | None = None,
    escapes: bool = True,
) -> Lineage:
    """The lineage of the input at `path`; `rows` reads its (identifier, row number) pairs,
    only when the bytes could hold an original ending in this generation's suffix (`escapes`:
    spelt with JSON escapes too; a CSV file has none)."""
    lineage = Lineage(ancestors or {})
    if not may_hold(path, plain_suffix(generation).encode(), escapes):
        return lineage
    ids = Identifiers(source, generation, lineage, keep=False)
    return Lineage(lineage.ancestors, reserved_originals(rows(), ids))
