"""Identifiers of re-sent rows: `<original>-mfx<generation>`, from lineage, never from spelling.

A row written to a corrected output gets a deterministic identifier made from its ORIGINAL
identifier and the run's generation (1 + the generation of the object it came from, and above
every generation that wrote one of its identifiers: `lineage.run_generation`). Both come from
lineage (the object's `mfx-generation` metadata, the correction audit in the database),
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
Lineage itself is traced, and an input's reserved originals found, in `lineage`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field

MAX_IDENTIFIER = 100  # Stripe's limit on a meter event identifier
HASHED_KEEP = 80  # characters of the original kept in the hashed form


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
