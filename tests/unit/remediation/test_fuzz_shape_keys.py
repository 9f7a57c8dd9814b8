"""The keys a JSON Lines batch is cut by (`batchbounds.cell_spans`), read from a line's shape.

A line no kept layout matched had its keys found by a regex pass of its own (`line_keys`): 38 %
of the reading thread on a file of optional payload keys. A line that fits the shape grammar
(`jsonlshapes.LINE`) has its shape found for its read anyway; its keys are now read from the
shape, once per distinct shape (`shape_keys`). Both must name the same keys, whatever the values
hold (colons, commas, braces and quotes in strings; numbers, true, false, null).
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediation.core import jsonlkeys, jsonlread
from remediation.core.jsonllines import line_keys
from remediation.core.jsonlread import JsonlBatches
from remediation.core.jsonlshapes import shape_keys, shape_lines
from remediation.engine import batches
from remediation.formats import FileFormat, read_records
from remediation.jsonreaders import text_stream
from tests.fuzz import fuzz_settings

_KEYS = st.text(alphabet='ab_:,{}" \\é1', min_size=1, max_size=4)
_STRINGS = st.text(alphabet='ab:,{}" \\\n\u2028é[]', max_size=6)
_VALUES = st.one_of(
    _STRINGS,
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_OBJECTS = st.dictionaries(
    _KEYS, st.one_of(_VALUES, st.dictionaries(_KEYS, _VALUES, max_size=4)), min_size=1, max_size=6
)
_SEPARATORS = st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")])


def _line(obj: dict[str, Any], separators: tuple[str, str], ascii_only: bool) -> str:
    return json.dumps(obj, separators=separators, ensure_ascii=ascii_only)


@fuzz_settings(300)
@given(st.lists(st.tuples(_OBJECTS, _SEPARATORS, st.booleans()), min_size=1, max_size=12))
def test_fuzz_a_shape_names_the_keys_of_its_lines(
    rows: list[tuple[dict[str, Any], tuple[str, str], bool]],
) -> None:
    lines = pa.array([_line(*row) for row in rows])
    shaped = shape_lines(lines, np.arange(len(lines)))
    places, named = line_keys(lines)
    for at in np.flatnonzero(shaped.fits).tolist():
        assert shape_keys(shaped.shapes[shaped.codes[at]]) == named[places[at]], lines[at]


def test_lines_of_every_kind_of_value_fit_and_name_their_keys() -> None:
    """Not all of the property's lines fit: these do, and are checked whatever it draws."""
    lines = pa.array(
        [
            '{"identifier":"a:b","timestamp":1,"payload":{"v":"x,y","w":null,"z":true},"n":"}"}',
            '{"identifier": "c", "payload": {"stripe_customer_id": "cus_1", "value": -2.5}}',
            '{"a":"","b":{},"c":{"d":"\\u00e9"}}',
        ]
    )
    shaped = shape_lines(lines, np.arange(3))
    assert shaped.fits.tolist() == [True, True, False]  # an escape: left to the line reader
    keys = [shape_keys(shaped.shapes[code]) for code in shaped.codes[:2].tolist()]
    assert keys == [
        frozenset({'"identifier"', '"timestamp"', '"payload"', '"v"', '"w"', '"z"', '"n"'}),
        frozenset({'"identifier"', '"payload"', '"stripe_customer_id"', '"value"'}),
    ]


def test_lines_read_by_shape_are_not_scanned_for_their_keys_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: every line no kept layout matched went through `line_keys` (the optional-keys
    file of `bench/remediate.py`, 128 layouts: 2.55x a json.loads/json.dumps copy, against
    1.24x before the batches were cut by their keys, d20b7e5). Now only the lines without a
    shape do: here, the two with an escape."""
    scanned: list[str] = []

    def counted(lines: pa.Array) -> tuple[Any, Any]:
        scanned.extend(lines.to_pylist())
        return line_keys(lines)

    monkeypatch.setattr(jsonlkeys, "line_keys", counted)
    rows = []
    for row in range(600):  # 2**6 layouts: optional keys, none a kept layout's share
        payload: dict[str, Any] = {"stripe_customer_id": f"cus_{row % 7}", "value": row}
        payload.update({f"dim{bit}": bit for bit in range(6) if row >> bit & 1})
        rows.append({"identifier": f"r{row}", "timestamp": 1, "payload": payload})
    rows[10]["payload"]["note"] = 'a "quoted" word'
    rows[20]["event_name"] = "caf\u00e9"
    lines = [json.dumps(r, separators=(",", ":")) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    found = list(batches(read_records(io.BytesIO(data), FileFormat.JSONL)))
    assert sum(map(len, found)) == 600
    assert scanned == [lines[10], lines[20]]


def _optional_keys_file(rows: int) -> bytes:
    """Rows of 2**6 layouts (optional payload keys): none a layout kept for matching."""
    lines = []
    for row in range(rows):
        payload: dict[str, Any] = {"stripe_customer_id": f"cus_{row % 7}", "value": row}
        payload.update({f"dim{bit}": bit for bit in range(6) if row >> bit & 1})
        lines.append(json.dumps({"identifier": f"r{row}", "timestamp": 1, "payload": payload}))
    return ("\n".join(lines) + "\n").encode()


def test_shapes_are_found_on_the_ahead_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a thread to work on, the shapes of a batch's lines that no kept layout can match
    are found there, while the batch before is read; the batches are the same."""
    data = _optional_keys_file(640)
    threads: list[str] = []

    def shapes(text: pa.Array, lines: Any) -> Any:
        threads.append(threading.current_thread().name)
        return shape_lines(text, lines)

    alone = list(JsonlBatches(text_stream(io.BytesIO(data)), 3, 128))
    monkeypatch.setattr(jsonlread, "shape_lines", shapes)  # on the ahead thread
    monkeypatch.setattr(jsonlkeys, "shape_lines", shapes)  # here, for lines it did not shape
    with ThreadPoolExecutor(1, thread_name_prefix="ahead") as pool:
        helped = list(JsonlBatches(text_stream(io.BytesIO(data)), 3, 128, pool.submit))
    assert threads == ["ahead_0"] * 5  # a batch of 128 lines each
    assert [len(batch) for batch in helped] == [len(batch) for batch in alone] == [128] * 5
    for one, other in zip(helped, alone, strict=True):
        assert one.identifier.text.equals(other.identifier.text)
        assert sorted(one.payload) == sorted(other.payload)
        for key, column in one.payload.items():
            assert column.text.equals(other.payload[key].text), key
