"""JSON Lines read as batches of columns (`core.jsonlread`, lines matched by learned layouts)
gives exactly the records the line-by-line reader gives: values of the same type and text,
keys in the same order, the same error code and message, the same malformed rows and reasons."""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from remediation import jsonreaders
from remediation.core import jsonlread, jsonlshapes
from remediation.core.batch import from_records
from remediation.core.batchjoin import concat_batches
from remediation.core.columns import Batch
from remediation.core.jsonllayouts import learn
from remediation.core.jsonlread import JsonlBatches, jsonl_batches
from remediation.errors import UnreadableFile
from remediation.jsonreaders import text_stream
from remediation.jsonrecords import JsonlRecords
from remediation.records import UsageRecord

DEPTH = 32
LEAVES = st.one_of(
    st.sampled_from(["cus_1", "", "1,234", "ü€𝄞", 'q"uote', "back\\slash", "tab\tin", "a:b,c"]),
    st.sampled_from([0, 5, -3, 1764000000000, 10**30, 12.5, 1e16, True, None, [1], {"x": 1}]),
    st.text(max_size=6),
    st.integers(-(10**12), 10**12),
)
KEYS = st.sampled_from(
    [
        "identifier",
        "timestamp",
        "event_name",
        "note",
        "mfx_code",
        "error_code",
        "error_message",
        "code",
        "message",
        "errors",
        "ü",
        'k"q',
        "a b",
    ]
)
PAYLOAD_KEYS = st.sampled_from(["stripe_customer_id", "value", "tokens", "ü-key", "x{y}"])


@st.composite
def objects(draw: Any) -> Any:
    obj: dict[str, Any] = {}
    for key in draw(st.lists(KEYS, unique=True, max_size=5)):
        obj[key] = draw(LEAVES)
    if draw(st.booleans()):
        obj["payload"] = {
            k: draw(LEAVES) for k in draw(st.lists(PAYLOAD_KEYS, unique=True, max_size=3))
        }
    if draw(st.integers(0, 3)) == 0:
        obj["payload"] = draw(LEAVES)  # not an object: malformed
    if draw(st.booleans()):
        obj["error"] = draw(
            st.one_of(
                st.fixed_dictionaries({"code": LEAVES, "message": LEAVES}),
                LEAVES,
            )
        )
    keys = draw(st.permutations(list(obj)))
    return {k: obj[k] for k in keys}


@st.composite
def lines(draw: Any) -> str:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(
            st.sampled_from(
                [
                    "",
                    "   ",
                    "not json",
                    "[1, 2]",
                    "{}",
                    '{"a": 1, "a": 2}',
                    '{"payload": {"v": 1, "v": 2}}',
                    "null",
                    '"x"',
                    "{" * 40 + "}" * 40,
                    '{ "identifier": "a" }',
                    '{"identifier":"\\u00fc"}',
                ]
            )
        )
    obj = draw(objects())
    style = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    return json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=style)


def seen(record: UsageRecord) -> str:
    """Everything about a record, types and key order included."""
    return repr(
        (
            record.row_number,
            record.identifier,
            record.timestamp,
            record.event_name,
            list(record.payload.items()),
            list(record.extra.items()),
            record.error_code,
            record.error_message,
            record.malformed,
        )
    )


def texts(batch: Batch) -> dict[str, list[tuple[str | None, int]]]:
    """Every column's text and kind per row: what the writers and the audit read."""
    columns = {"identifier": batch.identifier, "timestamp": batch.timestamp}
    columns["event_name"] = batch.event_name
    columns |= {f"payload.{k}": c for k, c in batch.payload.items()}
    columns |= {f"extra.{k}": c for k, c in batch.extra.items()}
    return {
        name: list(zip(c.text.to_pylist(), c.kind_array().tolist(), strict=True))
        for name, c in sorted(columns.items())
    }


def both(data: bytes, size: int) -> tuple[list[str], list[str], JsonlBatches]:
    """What the batches and the line reader read; the batches read the same with the next
    batch matched ahead on another thread (as `engine.remediate` reads them)."""
    records = list(JsonlRecords(io.BytesIO(data), DEPTH))
    expected = [seen(r) for r in records]
    reader = JsonlBatches(text_stream(io.BytesIO(data)), DEPTH, size)
    batches = list(reader)
    got = [seen(r) for r in concat_batches(batches).records()] if batches else []
    if batches:  # the same text for every value, not only the same value
        assert texts(concat_batches(batches)) == texts(from_records(records))
    with ThreadPoolExecutor(1) as pool:
        ahead = JsonlBatches(text_stream(io.BytesIO(data)), DEPTH, size, pool.submit)
        read_ahead = list(ahead)
    assert [len(b) for b in read_ahead] == [len(b) for b in batches]
    if batches:
        assert [seen(r) for r in concat_batches(read_ahead).records()] == got
        assert texts(concat_batches(read_ahead)) == texts(concat_batches(batches))
    assert ahead.hits == reader.hits
    return got, expected, reader


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(lines(), min_size=1, max_size=40),
    size=st.integers(1, 50),
    repeat=st.integers(1, 3),
)
def test_batches_read_what_the_line_reader_reads(body: list[str], size: int, repeat: int) -> None:
    data = ("\n".join(body * repeat) + "\n").encode()
    got, expected, _ = both(data, size)
    assert got == expected


def test_a_regular_file_is_matched_by_one_layout_and_the_rest_by_the_line_reader() -> None:
    rows = [
        {
            "identifier": f"e{i}",
            "timestamp": 1764000000 + i,
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": "cus_1", "value": i if i % 3 else str(i)},
            "error": {"code": "timestamp_in_future", "message": "Timestamp is in the future."},
        }
        for i in range(300)
    ]
    body = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in rows]
    body[7] = body[7].replace('"e7"', '"e\\u0037"')  # an escape: read by the line reader
    body[8] = body[8].replace('"value":8', '"value":8.0')  # a float: the same layout
    body[10] = body[10].replace('"value":10', '"value":10.50')  # kept as written: same layout
    got, expected, reader = both(("\n".join(body) + "\n").encode(), 64)
    assert got == expected
    assert len(reader.layouts) == 2  # value as a number (integer or float), value as text
    assert "'e7'" in got[7] and "8.0" in got[8] and "10.50)" in got[10]


def test_the_next_batch_is_matched_on_the_ahead_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a thread to match on, every batch after the second is matched there: the layout
    is learned from the first batch (read by shape, on the caller's thread), and the second
    batch was cut before that (matched on the caller's thread, after the third was cut and
    its match begun on the thread)."""
    body = [
        json.dumps({"identifier": f"e{i}", "timestamp": i, "event_name": "a", "payload": {}})
        for i in range(300)
    ]
    data = ("\n".join(body) + "\n").encode()
    threads: dict[str, str] = {}  # the first line of the batch matched -> the thread
    original = jsonlread.matched

    def matched(*args: Any) -> Any:
        first = json.loads(args[1][0].as_py())["identifier"]
        threads[first] = threading.current_thread().name
        return original(*args)

    monkeypatch.setattr(jsonlread, "matched", matched)
    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        reader = JsonlBatches(text_stream(io.BytesIO(data)), DEPTH, 50, pool.submit)
        batches = list(reader)
    assert [len(b) for b in batches] == [50] * 6
    assert concat_batches(batches).identifier.text.to_pylist() == [f"e{i}" for i in range(300)]
    main = threading.current_thread().name
    # by batch, not in the order they ran: a batch's match on the thread may start before or
    # after the one before it is matched here
    assert threads == {"e50": main} | {f"e{i}": "ahead_0" for i in (100, 150, 200, 250)}
    assert reader.hits == {reader.layouts[0].pattern: 300}


@pytest.mark.parametrize(
    ("obj", "line"),
    [
        ({"a": 1e20}, '{"a":1e+20}'),  # a float with an exponent
        ({"a": float("inf")}, '{"a":Infinity}'),
        ({"identifier": True}, '{"identifier":true}'),  # read as text by the line reader
        ({"event_name": None}, '{"event_name":null}'),
        ({"timestamp": False}, '{"timestamp":false}'),
        ({"error": {"code": None}}, '{"error":{"code":null}}'),
        ({"error_code": True}, '{"error_code":true}'),
        ({"payload": {"x": {"y": 1}}}, '{"payload":{"x":{"y":1}}}'),
        ({"a": "\u00fc"}, '{"a":"\\u00fc"}'),  # not what dumps(ensure_ascii=False) writes
        ({"a": 1}, '{ "a":1 }'),
    ],
)
def test_lines_left_to_the_line_reader(obj: Any, line: str) -> None:
    assert learn(obj, line, DEPTH) is None


def test_true_false_and_null_in_the_payload_and_other_keys_are_matched() -> None:
    """A file whose every line holds a null or a boolean (a writer's empty fields) is matched
    by its layouts, not read line by line (1M rows: 13.0 s that way, 3.6 s matched)."""
    rows = [
        {
            "identifier": f"e{i}",
            "timestamp": 1764000000 + i,
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": "cus_1", "value": i, "flag": [True, False][i % 2]},
            "note": None if i % 3 else "n",
            "test": i % 2 == 0,
        }
        for i in range(300)
    ]
    body = [json.dumps(r, separators=(",", ":")) for r in rows]
    got, expected, reader = both(("\n".join(body) + "\n").encode(), 64)
    assert got == expected
    assert sum(reader.hits.values()) == 300  # every line matched by a layout
    assert "('note', None)" in got[1] and "('test', True)" in got[0] and "('flag', False)" in got[1]


def test_a_layout_deeper_than_the_limit_is_not_learned() -> None:
    obj = {"payload": {"v": 1}}
    assert learn(obj, '{"payload":{"v":1}}', 1) is None
    assert learn(obj, '{"payload":{"v":1}}', 2) is not None


def test_lines_near_a_learned_layout_read_as_the_line_reader_reads_them() -> None:
    """Numbers json.loads spells another way or refuses, escapes and extra spaces in lines
    that otherwise fit the layout learned from the line before them."""
    good = '{"identifier":"e","timestamp":1764000000,"payload":{"value":5}}'
    variants = [
        good.replace("1764000000", "-0"),
        good.replace("1764000000", "0"),
        good.replace("1764000000", "017"),
        good.replace("1764000000", "1e3"),
        good.replace("1764000000", "-1764000000"),
        good.replace("1764000000", "9" * 5000),  # json.loads refuses it
        good.replace("1764000000", "9" * 999),
        good.replace('"e"', '"x\\"y"'),
        good.replace('"e"', '"x\\ny"'),
        good.replace('"e"', '"x\ty"'),  # a raw tab: not JSON
        good.replace(":5}", ": 5}"),
        good.replace(":5}", ":5,}"),
        good + " ",
        good.replace('"payload"', '"identifier"'),  # a key twice
    ]
    data = "\n".join([good, *variants, good]) + "\n"
    got, expected, reader = both(data.encode(), 100)
    assert got == expected
    assert reader.layouts  # the layout was learned and the variants held against it


def whole_text_lines(data: str, most: int) -> list[tuple[int, str, str | None]]:
    """The reference: the whole text split at "\\r\\n", "\\r" and "\\n" (where `readline`
    ends a line), blank lines skipped, a line longer than `most` (with its terminator)
    refused with its length and its start."""
    parts = re.split("(\\r\\n|\\r|\\n)", data)
    lines = [
        parts[i] + (parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)
    ]
    found: list[tuple[int, str, str | None]] = []
    for line in lines:
        stripped = line[: most + 1].strip(" \t\r\n")  # JSON's whitespace only
        if not stripped:
            continue
        number = len(found) + 1
        if len(line) > most:
            reason = f"line is {len(line)} characters long; at most {most} are read"
            found.append((number, stripped[: jsonreaders.RAW_KEPT], reason))
        else:
            found.append((number, stripped, None))
    return found


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(
        st.sampled_from(["a", "b c", " ", "\n", "\r", "\r\n", "{}", "ü", "x" * 30, "\t", "\u2028"]),
        max_size=60,
    ),
    block=st.integers(1, 9),
    most=st.integers(3, 40),
)
def test_lines_read_in_blocks_are_the_lines_readline_gives(
    pieces: list[str], block: int, most: int
) -> None:
    data = "".join(pieces).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonreaders, "LINE_BLOCK_CHARS", block)
        patch.setattr(jsonreaders, "MAX_LINE_CHARS", most)
        got = list(jsonreaders.jsonl_lines(text_stream(io.BytesIO(data))))
    assert got == whole_text_lines("".join(pieces), most)


@settings(max_examples=200, deadline=None)
@given(
    body=st.lists(
        st.sampled_from(
            [
                '{"identifier":"a","timestamp":1}',
                '{"identifier":"b","timestamp":2}',
                '{"identifier":"' + "x" * 60 + '","timestamp":3}',  # past the patched limit
                "",
                "  ",
                "not json",
            ]
        ),
        max_size=30,
    ),
    ends=st.sampled_from(["\n", "\r\n", "\r"]),
    block=st.integers(1, 50),
    size=st.integers(1, 7),
)
def test_refused_lines_keep_their_place_across_blocks_and_batches(
    body: list[str], ends: str, block: int, size: int
) -> None:
    data = (ends.join(body) + ends).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonreaders, "LINE_BLOCK_CHARS", block)
        patch.setattr(jsonreaders, "MAX_LINE_CHARS", 50)
        got, expected, _ = both(data, size)
    assert got == expected


def test_bytes_that_are_not_utf8_fail_the_file_as_the_line_reader_fails_it() -> None:
    data = b'{"identifier":"a"}\n' * 3 + b'{"identifier":"\xff"}\n'
    with pytest.raises(UnreadableFile) as by_records:
        list(JsonlRecords(io.BytesIO(data), DEPTH))
    with pytest.raises(UnreadableFile) as by_batches:
        list(jsonl_batches(JsonlRecords(io.BytesIO(data), DEPTH), 2))
    assert by_batches.value.reason == by_records.value.reason
    assert "not UTF-8" in by_batches.value.reason


def optional_keys_rows(count: int, keys: int) -> list[str]:
    """Rows whose payload carries a different subset of `keys` optional keys each (2**keys
    layouts), some keys' values numbers, others text."""
    rows = []
    chance = random.Random(7)
    for i in range(count):
        payload: dict[str, object] = {"stripe_customer_id": f"cus_{i % 7}", "value": i}
        for bit in range(keys):
            if chance.random() < 0.5:
                payload[f"dim{bit}"] = bit if bit % 2 else f"v{i % 5}"
        row = {"identifier": f"e{i}", "timestamp": 1764000000 + i, "event_name": "api_requests"}
        row |= {"payload": payload}
        if i % 4:
            row["error"] = {"code": "timestamp_in_future", "message": "Timestamp is in the future."}
        rows.append(json.dumps(row, separators=(",", ":")))
    return rows


def test_a_file_of_many_layouts_is_read_by_shape_not_line_by_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows with optional payload keys (64 layouts): each shape's first line is decoded, the
    rest cut out by its layout (1M such rows took 42 s when lines past the layouts kept went
    to json.loads one by one, against 11 s for a json.loads/json.dumps copy)."""
    body = optional_keys_rows(1500, 6)
    decoded: list[str] = []
    original = jsonlshapes.parse_line

    def counted(line: str, depth: int) -> Any:
        decoded.append(line)
        return original(line, depth)

    monkeypatch.setattr(jsonlshapes, "parse_line", counted)
    monkeypatch.setattr(jsonlread, "parse_line", counted)
    got, expected, reader = both(("\n".join(body) + "\n").encode(), 100)
    assert got == expected
    assert sum(reader.hits.values()) == 1500  # every line read by a layout
    shapes = len(reader.shapes.known)
    assert 100 < shapes <= 128  # 64 payload layouts, with and without an error
    assert len(decoded) == 2 * shapes  # once per shape by `both`'s reader, once by its ahead one


def test_lines_of_a_shape_that_learned_no_layout_are_read_by_the_line_reader() -> None:
    """A shape's first line decides for the shape: lines json.dumps would not write so (a key
    twice, a float repr() spells another way) and lines that fit no shape (keys holding `,:{}`,
    an empty key, a space json.dumps does not write) are read line by line, as they are."""
    good = optional_keys_rows(3, 2)
    odd = [
        '{"identifier":"a","payload":{"v":1,"v":2}}',
        '{"identifier":"b","payload":{"v":3,"v":4}}',
        '{"identifier":"c","payload":{"v":1.50}}',
        '{"identifier":"d","payload":{"v":1.5}}',
        '{"identifier":"e","payload":{"a:b":1}}',
        '{"identifier":"f","payload":{"a,b":"x","c{":2}}',
        '{"identifier":"g","payload":{"":1}}',
        '{"identifier":"h" ,"payload":{}}',
        '{"identifier":"i","payload":{"v":"x"},"n":null}',
        '{"identifier":"j","payload":{"v":"y"},"n":true}',
        '{"identifier":"k","payload":{"v":"y"},"n":false}',
        '{"identifier":"l","a:":"q"x"}',
        '{"identifier":"m","a:":":"}',
    ]
    data = "\n".join([*good, *odd, *odd, *good]) + "\n"
    got, expected, _ = both(data.encode(), 7)
    assert got == expected


def test_string_values_starting_with_a_colon_are_read_as_the_line_reader_reads_them() -> None:
    """A string value's text is never taken for a key's end: with spaced separators, the
    shapes of `{"p": ":", "b": "x"}` and `{"p": ":", "c": "x"}` were one (a pass for compact
    separators ran into the value), and the second line's `c` was read as `b`."""
    head = '{"identifier": "i%d", "timestamp": 1764000000, "event_name": "m", "payload": '
    payloads = [
        '{"p": ":", "b": "x"}',
        '{"p": ":", "c": "x"}',
        '{"p": ":5", "value": 3}',
        '{"p": ":-1", "value": 4}',
        '{"p": ": 7", "value": 5}',
        '{"p": "a:", "value": 6}',
        '{"p": ":", "value": 7}',
    ]
    spaced = [head % at + payload + "}" for at, payload in enumerate(payloads)]
    compact = [line.replace(": ", ":").replace(", ", ",") for line in spaced]
    for body in (spaced, compact, [*spaced, *compact]):
        got, expected, _ = both(("\n".join(body * 3) + "\n").encode(), 50)
        assert got == expected


def test_shapes_past_the_limit_are_read_by_the_line_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlshapes, "MAX_SHAPES", 3)
    body = optional_keys_rows(200, 4)
    got, expected, reader = both(("\n".join(body) + "\n").encode(), 50)
    assert got == expected
    assert len(reader.shapes.known) == 3
    assert 0 < sum(reader.hits.values()) < 200


def _shape_in_one_pass(line: str) -> str:
    """A line's shape as the one pass with the key captured gave it (before the passes
    without a capture group, `jsonlshapes.line_shapes`)."""
    strings = re.sub(r'([{,] ?"[^"]*": ?)"[^"]*"', "\\1\x01", line)
    return re.sub(r'(": ?)-?[0-9][0-9.]*', "\\1\x02", strings)


def _revalued(line: str) -> str:
    """`line` with other values of the same kinds: each string value longer by a letter, each
    number another one (its shape is `line`'s)."""
    strings = re.sub(r'(": ?)"([^"]*)"', '\\1"\\2q"', line)
    return re.sub(r'(": ?)-?[0-9][0-9.]*', "\\g<1>70", strings)


def _alternated(line: str) -> str:
    """`line` with its key separators `:` and `: ` in turn."""
    turns = itertools.count()
    return re.sub(r'": ?', lambda _: '": ' if next(turns) % 2 else '":', line)


@settings(max_examples=300, deadline=None)
@given(body=st.lists(lines(), min_size=1, max_size=20))
@example(  # separators alternated, the payload's value `:` was taken for a key's end
    body=['{"identifier":"c","timestamp":"c","event_name":"c","payload":":"}']
)
def test_a_lines_shape_is_its_keys_and_separators_with_every_value_a_kind(body: list[str]) -> None:
    """Of the lines that fit `LINE` (separators mixed within a line too), two share a shape
    exactly when the one pass with the key captured gave them one (string values and numbers
    replaced by a mark of their kind, keys and separators kept), and the reader keeps one
    shape for each."""
    both = [*body, *map(_alternated, body)]
    fits = [line for line in [*both, *map(_revalued, both)] if re.fullmatch(jsonlshapes.LINE, line)]
    reader = jsonlshapes.Shapes(DEPTH)
    if fits:
        reader.read(pa.array(fits, pa.string()), np.arange(len(fits)), range(1, len(fits) + 1))
    shapes = jsonlshapes.line_shapes(pa.array(fits, pa.string())).to_pylist()
    reference = [_shape_in_one_pass(line) for line in fits]
    assert len(set(zip(shapes, reference, strict=True))) == len(set(shapes)) == len(set(reference))
    assert set(reader.known) == set(shapes)


def test_a_layout_is_hashed_by_its_pattern_not_its_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the lines each layout read hashes the layouts of a batch's shapes, hundreds a
    batch for a file of optional keys: by the pattern's text (hashed once), never leaf by
    leaf; equal layouts stay one key."""
    from remediation.core import jsonllayouts

    obj = {"identifier": "a", "timestamp": 1, "payload": {"value": 2, "dim": "x"}}
    layout, same = (learn(obj, json.dumps(obj), DEPTH) for _ in range(2))
    assert layout is not None and same is not None and layout.leaves
    hashed: list[object] = []
    monkeypatch.setattr(jsonllayouts.Leaf, "__hash__", lambda leaf: hashed.append(leaf) or 0)
    counts = {layout: 1}
    counts[same] = counts.get(same, 0) + 1
    assert counts == {layout: 2} and hashed == []
    assert [name for name, _ in layout.columns] == [
        (leaf.group, leaf.key, leaf.path) for leaf in layout.leaves
    ]
