"""Customer search queries, the part of Stripe's search query language meterfix sends.

A query is clauses joined by ` AND ` outside quotes; a clause is `metadata["key"]:"value"`
or `email:`/`name:`/`description:` and a value. Strings are in double or single quotes, a
quote or backslash inside escaped with a backslash (`\\"`, `\\'`, `\\\\`); any other
backslash sequence, an unquoted value or anything else refuses the whole query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandbox.objects import JSON

_STRING = r"""(?:"(?:[^"\\]|\\["'\\])*"|'(?:[^'\\]|\\["'\\])*')"""
_CLAUSE = re.compile(
    rf"\s*(?:metadata\[(?P<key>{_STRING})\]|(?P<field>email|name|description))"
    rf"\s*:\s*(?P<value>{_STRING})"
)
_AND = re.compile(r"\s+AND\s+")
_END = re.compile(r"\s*\Z")
_ESCAPE = re.compile(r"\\(.)")


class UnsupportedQuery(ValueError):
    """The query is not one the sandbox understands (Stripe's answer: 400)."""


@dataclass(frozen=True)
class Clause:
    """`metadata[key]:value` (field None) or `field:value` (key None), values unescaped."""

    field: str | None
    key: str | None
    value: str

    def matches(self, customer: JSON) -> bool:
        if self.key is not None:
            return bool(customer.get("metadata", {}).get(self.key) == self.value)
        return bool(customer.get(str(self.field)) == self.value)


def parse_query(query: str) -> list[Clause]:
    """The clauses of `query`; UnsupportedQuery when it is not clauses joined by ` AND `."""
    clauses, position = [], 0
    while True:
        clause = _CLAUSE.match(query, position)
        if clause is None:
            raise UnsupportedQuery(query)
        key = None if clause["key"] is None else _unquoted(clause["key"])
        if key == "":
            raise UnsupportedQuery(query)
        clauses.append(Clause(clause["field"], key, _unquoted(clause["value"])))
        position = clause.end()
        if _END.match(query, position):
            return clauses
        separator = _AND.match(query, position)
        if separator is None:
            raise UnsupportedQuery(query)
        position = separator.end()


def _unquoted(literal: str) -> str:
    return _ESCAPE.sub(r"\1", literal[1:-1])
