"""JSON text made column-wise: strings as json.dumps(value, ensure_ascii=False) writes them
(json's own encoder for the few that need escaping), and JSON Lines kept whole by every line
reader; apart from `text`, which knows no JSON.
"""

from __future__ import annotations

from json.encoder import encode_basestring

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from remediation.core.text import as_text, join, line_bytes, mask, rows_holding, scatter

_JSON_ESCAPED = bytes(range(0x20)) + b'"\\'  # what json.dumps(ensure_ascii=False) escapes


def json_strings(values: pa.Array) -> pa.Array:
    """Each value as json.dumps(value, ensure_ascii=False) writes it; null as "null".

    Most values need no escaping and are only wrapped in quotes; the few that do are escaped by
    json's own encoder, which is what json.dumps calls, so the two cannot drift apart.
    """
    text = as_text(values)
    plain = pc.fill_null(text, "") if text.null_count else text
    quoted = join(['"', plain, '"'], len(text))
    special = rows_holding(text, _JSON_ESCAPED)
    if len(special):
        escaped = [encode_basestring(s) for s in text.take(pa.array(special)).to_pylist()]
        quoted = scatter(quoted, special, pa.array(escaped, pa.large_string()))
    if text.null_count:
        nulls = np.flatnonzero(mask(text.is_null()))
        quoted = scatter(quoted, nulls, pa.repeat(pa.scalar("null", pa.large_string()), len(nulls)))
    return quoted


def json_inner(values: pa.Array) -> pa.Array | None:
    """Each value as `json_strings` writes it, without its quotes (large_string); None when
    a value is null (its JSON, null, has none). A caller joining it with other parts puts
    the quotes into the constant text around it, which costs nothing (`json_parts`)."""
    text = as_text(values)
    if text.null_count:
        return None
    special = rows_holding(text, _JSON_ESCAPED)
    if len(special):
        escaped = [encode_basestring(s)[1:-1] for s in text.take(pa.array(special)).to_pylist()]
        text = scatter(text, special, pa.array(escaped, pa.large_string()))
    return text


def json_parts(values: pa.Array) -> list[pa.Array | str]:
    """`json_strings(values)` as parts for `join`: the quotes apart from the text when no
    value is null (they merge with the constants around them)."""
    inner = json_inner(values)
    return [json_strings(values)] if inner is None else ['"', inner, '"']


# U+2028 and U+2029 in UTF-8: JSON lets a string hold them raw (json.dumps with
# ensure_ascii=False writes them so), but `str.splitlines()`, JavaScript before ES2019 and many
# line readers end a line there, cutting a JSON Lines line in two.
_LINE_SEPARATORS = (b"\xe2\x80\xa8", b"\xe2\x80\xa9")


def json_lines_safe(texts: pa.Array) -> pa.Array:
    """JSON texts (large_string) with U+2028, U+2029 and U+0085 written as the escapes
    `\\u2028`, `\\u2029` and `\\u0085`: the same JSON (outside a string no JSON text holds
    them), which no line reader breaks. A text without them is returned as it is (found by a
    scan of the bytes for their lead bytes, 0xE2 and 0xC2, rare in most text)."""
    data, offsets = line_bytes(texts)
    raw = np.frombuffer(data, np.uint8)
    lead = np.flatnonzero(raw[:-2] == 0xE2) if len(raw) > 2 else np.zeros(0, np.int64)
    third = raw[lead + 2]
    hit = lead[(raw[lead + 1] == 0x80) & ((third == 0xA8) | (third == 0xA9))]
    # U+0085 (NEL, 0xC2 0x85): `str.splitlines()` ends a line there too (a NEL in a payload
    # value cut its line in two, neither half JSON)
    nel = np.flatnonzero((raw[:-1] == 0xC2) & (raw[1:] == 0x85)) if len(raw) > 1 else lead[:0]
    hit = np.concatenate([hit, nel])
    if not len(hit):
        return texts
    rows = np.unique(np.searchsorted(offsets, hit, side="right") - 1)
    escaped = [line_safe(text) for text in texts.take(pa.array(rows)).to_pylist()]
    return scatter(texts, rows, pa.array(escaped, pa.large_string()))


def line_safe(line: str) -> str:
    """One JSON text with the characters line readers end a line at, inside its strings
    (U+2028, U+2029, U+0085), written as escapes: the same JSON."""
    for char, escape in _ESCAPES:
        if char in line:
            line = line.replace(char, escape)
    return line


_ESCAPES = (("\u2028", "\\u2028"), ("\u2029", "\\u2029"), ("\x85", "\\u0085"))


def json_text(value: str) -> str:
    """One string as `json_strings` writes it: json's own encoder, as json.dumps(value,
    ensure_ascii=False) calls it (through an array and back it cost ~40 us a call, and a batch
    of rows each naming keys of their own asks for tens of thousands of keys)."""
    text: str = encode_basestring(value)
    return text
