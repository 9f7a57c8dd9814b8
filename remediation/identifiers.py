"""Deterministic identifiers for re-sent rows: `<original>-r<generation>`.

A derived identifier never collides with the original, and because it is deterministic a
re-upload of the same corrected file can never bill twice. A row without an identifier first
gets a stable hash of its source object and row number. Never depends on the reference time.
"""

from __future__ import annotations

import hashlib
import re

_GENERATION = re.compile(r"^(.*)-r([0-9]+)$")


def stable_identifier(source: str, row_number: int) -> str:
    digest = hashlib.sha256(f"{source}\x00{row_number}".encode()).hexdigest()
    return f"mfx-{digest[:24]}"


def split_generation(identifier: str) -> tuple[str, int]:
    """`abc-r2` -> (`abc`, 2); an identifier without the suffix is generation 0."""
    if "-r" not in identifier:
        return identifier, 0
    match = _GENERATION.match(identifier)
    return (match[1], int(match[2])) if match else (identifier, 0)


def derive_identifier(identifier: str | None, source: str, row_number: int, generation: int) -> str:
    base = identifier if identifier else stable_identifier(source, row_number)
    base, previous = split_generation(base)
    return f"{base}-r{max(generation, previous + 1)}"
