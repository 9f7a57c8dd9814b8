"""Text built on arrow arrays is byte for byte what Python's csv and json modules write."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from remediation.core.csvtext import csv_cells, csv_lines, csv_rows
from remediation.core.jsontext import json_inner, json_parts, json_strings
from remediation.core.text import TextPool, byte_counts, join, rows_holding, take_parts, texts_of

# Characters csv and json treat specially, plus multi-byte ones sharing a first byte with the
# non-ASCII delimiters (é/à, §/©, 😀/😁); lone surrogates cannot be held in an arrow string,
# so the general alphabet is what UTF-8 can encode.
SPECIAL = list(',;|\t "\\\r\n\x00\x1f\x7féà§©😀😁')
CHARACTER = st.sampled_from(SPECIAL) | st.characters(codec="utf-8")
TEXT = st.text(CHARACTER, max_size=12)
MAYBE_TEXT = st.none() | TEXT
# Any one character csv.writer accepts, including ones RE2 or quoting could trip over.
DELIMITERS = list(',;"\t| \x00\\]-aé§😀\r\n')


@st.composite
def string_arrays(draw: st.DrawFn, values: Sequence[str | None]) -> pa.Array:
    """`values` as string or large_string, sometimes a slice of a longer array (offset > 0)."""
    kind = draw(st.sampled_from([pa.string(), pa.large_string()]))
    before = draw(st.lists(MAYBE_TEXT, max_size=2))
    after = draw(st.lists(MAYBE_TEXT, max_size=2))
    return pa.array([*before, *values, *after], kind).slice(len(before), len(values))


@st.composite
def tables(draw: st.DrawFn) -> list[list[str | None]]:
    """Rows of one to four cells, nulls among them; zero rows included."""
    width = draw(st.integers(1, 4))
    return draw(st.lists(st.lists(MAYBE_TEXT, min_size=width, max_size=width), max_size=12))


def columns_of(data: st.DataObject, rows: list[list[str | None]], width: int) -> list[pa.Array]:
    """The table as arrow columns, each of a drawn kind and offset."""
    return [data.draw(string_arrays([row[at] for row in rows])) for at in range(width)]


def csv_text(rows: Sequence[Sequence[str | None]], delimiter: str = ",") -> str:
    """What csv.writer writes for `rows`: the reference every test compares with."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue()


def texts(array: pa.Array) -> list[str]:
    """The Python strings of a result, checking on the way that it is large_string."""
    assert array.type == pa.large_string()
    assert array.null_count == 0
    values: list[str] = array.to_pylist()
    return values


# --- csv_rows ---------------------------------------------------------------------------------


@given(st.data(), st.sampled_from(DELIMITERS))
def test_csv_rows_is_what_csv_writer_writes(data: st.DataObject, delimiter: str) -> None:
    rows = data.draw(tables())
    width = len(rows[0]) if rows else data.draw(st.integers(1, 4))
    columns = columns_of(data, rows, width)
    body, offsets = csv_rows(columns, delimiter)
    assert bytes(body) == csv_text(rows, delimiter).encode()
    assert offsets.dtype == np.int64 and len(offsets) == len(rows) + 1
    cut = [bytes(body)[start:end] for start, end in itertools.pairwise(offsets)]
    assert cut == [csv_text([row], delimiter).encode() for row in rows]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[""]], '""\r\n'),  # a lone empty field is quoted, else the line would be blank
        ([[None]], '""\r\n'),
        ([["", ""]], ",\r\n"),
        ([["", None, ""]], ",,\r\n"),
        ([["a"], [""], ["b"]], 'a\r\n""\r\nb\r\n'),
        ([['say "hi"', "x"]], '"say ""hi""",x\r\n'),
        ([["a,b", "c\r\nd", "e\rf", "g\nh"]], '"a,b","c\r\nd","e\rf","g\nh"\r\n'),
        ([["semi;colon", "tab\there", " pad "]], "semi;colon,tab\there, pad \r\n"),
        ([["nul\x00", "é😀"]], "nul\x00,é😀\r\n"),
    ],
)
def test_csv_rows_examples(rows: list[list[str | None]], expected: str) -> None:
    columns = [pa.array([row[at] for row in rows], pa.string()) for at in range(len(rows[0]))]
    body, _ = csv_rows(columns)
    assert bytes(body) == expected.encode() == csv_text(rows).encode()


def test_csv_rows_of_no_rows_is_empty() -> None:
    body, offsets = csv_rows([pa.array([], pa.string()), pa.array([], pa.large_string())])
    assert bytes(body) == b""
    assert offsets.tolist() == [0]


def test_csv_rows_quotes_by_the_delimiter_it_is_given() -> None:
    rows = [["a;b", "c,d", "e\tf"]]
    columns = [pa.array([cell]) for cell in rows[0]]
    for delimiter in [";", ",", "\t", "§"]:
        assert bytes(csv_rows(columns, delimiter)[0]) == csv_text(rows, delimiter).encode()


def test_csv_rows_refuses_what_csv_refuses() -> None:
    with pytest.raises(TypeError):
        csv_rows([pa.array(["a"])], delimiter=";;")
    with pytest.raises(ValueError, match="at least one column"):
        csv_rows([])
    with pytest.raises(ValueError, match="expected 2 rows"):
        csv_rows([pa.array(["a", "b"]), pa.array(["c"])])
    with pytest.raises(TypeError, match="string array"):
        csv_rows([pa.array([1, 2])])


def test_a_null_keeps_its_hidden_bytes_out_of_the_text() -> None:
    # Arrow lets a null slot span bytes; they must not surface, nor make the cell look quoted.
    hidden = pa.Array.from_buffers(
        pa.string(),
        3,
        [
            pa.py_buffer(bytes([0b101])),
            pa.py_buffer(np.array([0, 1, 5, 6], np.int32)),
            pa.py_buffer(b'a,"\n\x01b'),
        ],
    )
    assert hidden.to_pylist() == ["a", None, "b"]
    assert bytes(csv_rows([hidden])[0]) == b'a\r\n""\r\nb\r\n'
    assert bytes(csv_rows([hidden, hidden])[0]) == b"a,a\r\n,\r\nb,b\r\n"
    assert texts(csv_cells(hidden)) == ["a", "", "b"]
    assert texts(json_strings(hidden)) == ['"a"', "null", '"b"']


# --- TextPool -------------------------------------------------------------------------------


@given(st.data())
def test_pooled_texts_are_their_parts_one_after_the_other(data: st.DataObject) -> None:
    """Any texts of parts (constants, values of arrays of either string type, sliced or not,
    an array used by several parts) taken from one pool, padded with "", are their parts
    joined in order, in the order asked for."""
    arrays = [
        data.draw(string_arrays(data.draw(st.lists(TEXT, min_size=1, max_size=6))))
        for _ in range(data.draw(st.integers(0, 3)))
    ]
    constants = data.draw(st.lists(TEXT, max_size=4))
    part = st.tuples(st.integers(0, len(arrays) - 1), st.integers(0, 5)) if arrays else st.nothing()
    width = data.draw(st.integers(1, 5))
    wanted = data.draw(
        st.lists(st.lists(part | st.sampled_from(constants or [""]), max_size=width), max_size=8)
    )
    pool = TextPool(data.draw(st.lists(st.sampled_from(constants))) if constants else ())
    index = np.full((len(wanted), width), pool.EMPTY, np.int64)
    expected = []
    for row, parts in enumerate(wanted):
        text = ""
        for column, one in enumerate(parts):
            if isinstance(one, str):
                index[row, column] = pool.constant(one)
                text += one
            else:
                array = arrays[one[0]]
                at = one[1] % len(array)
                index[row, column] = pool.start(array) + at
                text += array[at].as_py()
        expected.append(text)
    assert texts(texts_of(pool.take(index), width)) == expected


def test_a_pool_holds_each_array_once_and_takes_nothing_new_after_its_first_take() -> None:
    pool = TextPool([";"])  # "" and ";" first, then the arrays, then constants met later
    names, more = pa.array(["ab", "c"]), pa.array(["d"], pa.large_string())
    assert (pool.start(names), pool.start(more), pool.start(names)) == (2, 4, 2)
    comma = pool.constant(",")
    assert comma < 0 and pool.constant(",") == comma
    assert (pool.constant(""), pool.constant(";")) == (pool.EMPTY, 1)
    index = np.array([[2, comma, 4], [3, 1, pool.EMPTY]])
    assert texts(texts_of(pool.take(index), 3)) == ["ab,d", "c;"]
    assert texts(texts_of(pool.take(index[1:]), 3)) == ["c;"]  # taken again, pool unchanged
    assert pool.constant(",") == comma  # known constants still answer
    with pytest.raises(RuntimeError, match="after its first take"):
        pool.constant(":")
    with pytest.raises(RuntimeError, match="after its first take"):
        pool.start(pa.array(["e"]))
    with pytest.raises(ValueError, match="5 parts are not texts of 2"):
        texts_of(pa.array(list("abcde"), pa.large_string()), 2)


# --- csv_lines --------------------------------------------------------------------------------


@st.composite
def sources_of(
    draw: st.DrawFn, cells: list[str | None]
) -> list[tuple[pa.Array, np.ndarray, np.ndarray]]:
    """One column's `cells` spread over one to three source arrays, each holding its rows'
    cells at shuffled places among values no line reads (so a source may be used for a few
    of its rows only), the lines given in any order."""
    count = draw(st.integers(1, 3))
    owner = [draw(st.integers(0, count - 1)) for _ in cells]
    sources = []
    for source in range(count):
        lines = [line for line, at in enumerate(owner) if at == source]
        lines = draw(st.permutations(lines))
        unread = draw(st.lists(MAYBE_TEXT, max_size=draw(st.sampled_from([0, 2, 40]))))
        values: list[str | None] = [cells[line] for line in lines] + unread
        order = draw(st.permutations(range(len(values))))
        placed = [order.index(at) for at in range(len(lines))]  # where each line's cell went
        array = draw(string_arrays([values[at] for at in order]))
        sources.append((array, np.array(lines, np.int64), np.array(placed, np.int64)))
    return sources


@given(st.data(), st.sampled_from(DELIMITERS))
def test_csv_lines_from_many_sources_is_what_csv_writer_writes(
    data: st.DataObject, delimiter: str
) -> None:
    rows = data.draw(tables())
    width = len(rows[0]) if rows else data.draw(st.integers(1, 4))
    columns = [data.draw(sources_of([row[at] for row in rows])) for at in range(width)]
    body, offsets = csv_lines(columns, len(rows), delimiter)
    assert bytes(body) == csv_text(rows, delimiter).encode()
    cut = [bytes(body)[start:end] for start, end in itertools.pairwise(offsets)]
    assert cut == [csv_text([row], delimiter).encode() for row in rows]


def test_csv_lines_takes_each_cell_where_its_source_says() -> None:
    early = pa.array(["b", "x,y", None, "unread"])
    late = pa.array(['q"', ""])
    columns = [
        [(early, np.array([1, 3, 0]), np.array([0, 1, 2])), (late, np.array([2]), np.array([0]))],
        [(late, np.array([0, 1, 2, 3]), np.array([1, 1, 0, 0]))],
    ]
    body, offsets = csv_lines(columns, 4, ";")
    assert bytes(body) == b';\r\nb;\r\n"q""";"q"""\r\nx,y;"q"""\r\n'
    assert offsets.tolist() == [0, 3, 7, 20, 31]
    lone, _ = csv_lines([[(late, np.array([0, 1]), np.array([1, 0]))]], 2)
    assert bytes(lone) == b'""\r\n"q"""\r\n'


def test_csv_lines_refuses_sources_that_do_not_cover_the_lines() -> None:
    values = pa.array(["a", "b"])
    with pytest.raises(IndexError, match="outside its source"):
        csv_lines([[(values, np.array([0, 1]), np.array([0, 2]))]], 2)
    with pytest.raises(IndexError, match="outside its source"):
        csv_lines([[(values, np.array([0, 1]), np.array([-1, 0]))]], 2)
    with pytest.raises(ValueError, match="column 1 has lines no source gives a cell"):
        csv_lines(
            [
                [(values, np.array([0, 1]), np.array([0, 1]))],
                [(values, np.array([0]), np.array([1]))],
            ],
            2,
        )
    with pytest.raises(ValueError, match="differ in length"):
        csv_lines([[(values, np.array([0, 1]), np.array([0]))]], 2)
    with pytest.raises(ValueError, match="at least one column"):
        csv_lines([], 0)
    with pytest.raises(TypeError):
        csv_lines([[(values, np.array([0, 1]), np.array([0, 1]))]], 2, delimiter="")
    assert csv_lines([[(values, np.array([], np.int64), np.array([], np.int64))]], 0)[0] == b""


# --- csv_cells --------------------------------------------------------------------------------


@given(st.data(), st.lists(MAYBE_TEXT, max_size=12), st.sampled_from(DELIMITERS))
def test_csv_cells_are_what_csv_writer_writes(
    data: st.DataObject, values: list[str | None], delimiter: str
) -> None:
    # A cell beside another is never the lone-empty-field case, so "" stays "".
    tail = f"{delimiter}x\r\n"
    expected = [csv_text([[value, "x"]], delimiter).removesuffix(tail) for value in values]
    assert texts(csv_cells(data.draw(string_arrays(values)), delimiter)) == expected


def test_csv_cells_quote_a_non_ascii_delimiter_only_where_it_is() -> None:
    # "à" and "é" share their first UTF-8 byte, so the byte scan alone would quote "à" too.
    values = pa.array(["à", "é", "xéy", "©"])
    assert texts(csv_cells(values, "é")) == ["à", '"é"', '"xéy"', "©"]


def test_csv_cells_examples() -> None:
    values = pa.array(["plain", "", None, "a,b", 'q"', "\r", "\n", ";"])
    expected = ["plain", "", "", '"a,b"', '"q"""', '"\r"', '"\n"', ";"]
    assert texts(csv_cells(values)) == expected
    assert texts(csv_cells(values, ";"))[-1] == '";"'


# --- json_strings -----------------------------------------------------------------------------


@given(st.data(), st.lists(MAYBE_TEXT, max_size=12))
def test_json_strings_are_what_json_dumps_writes(
    data: st.DataObject, values: list[str | None]
) -> None:
    expected = [json.dumps(value, ensure_ascii=False) for value in values]
    assert texts(json_strings(data.draw(string_arrays(values)))) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", '""'),
        (None, "null"),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("\n\r\t\b\f", '"\\n\\r\\t\\b\\f"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x7f é 😀 \u2028", '"\x7f é 😀 \u2028"'),  # nothing above U+001F is escaped
        ("/", '"/"'),
    ],
)
def test_json_strings_examples(value: str | None, expected: str) -> None:
    assert texts(json_strings(pa.array([value], pa.string()))) == [expected]
    assert expected == json.dumps(value, ensure_ascii=False)


def test_json_strings_of_nothing() -> None:
    assert texts(json_strings(pa.array([], pa.large_string()))) == []


# --- join -------------------------------------------------------------------------------------


@given(st.data(), st.integers(0, 10))
def test_join_concatenates_row_by_row(data: st.DataObject, length: int) -> None:
    kinds = st.lists(st.booleans(), max_size=6)
    parts: list[pa.Array | str] = []
    for is_array in data.draw(kinds):
        column = data.draw(st.lists(TEXT, min_size=length, max_size=length))
        parts.append(data.draw(string_arrays(column)) if is_array else data.draw(TEXT))
    expected = [
        "".join(part if isinstance(part, str) else part[row].as_py() for part in parts)
        for row in range(length)
    ]
    assert texts(join(parts, length)) == expected


def test_join_examples() -> None:
    ids = pa.array(["a", "b"], pa.string())
    names = pa.array(["x", ""], pa.large_string())
    assert texts(join(["{", ids, ":", "", " ", names, "}"], 2)) == ["{a: x}", "{b: }"]
    assert texts(join([], 3)) == ["", "", ""]
    assert texts(join(["only"], 2)) == ["only", "only"]
    assert texts(join([ids], 2)) == ["a", "b"]
    assert texts(join([ids[1:], "!"], 1)) == ["b!"]
    assert texts(join(["x", ids[:0]], 0)) == []


def test_join_refuses_nulls_wrong_lengths_and_other_types() -> None:
    with pytest.raises(ValueError, match="nulls"):
        join([pa.array(["a", None])], 2)
    with pytest.raises(ValueError, match="expected 3 rows"):
        join([pa.array(["a", "b"])], 3)
    with pytest.raises(TypeError, match="string array"):
        join([pa.array([b"a"], pa.binary())], 1)


# --- timing -----------------------------------------------------------------------------------


def _timed(name: str, build: Callable[[], object]) -> None:
    """Print the best of three runs: a manual benchmark, run as a script, never asserted."""
    best = min(_seconds(build) for _ in range(3))
    print(f"{name}: {best:.3f} s")


def _seconds(build: Callable[[], object]) -> float:
    start = time.perf_counter()
    build()
    return time.perf_counter() - start


def _benchmark_columns(rows: int, width: int) -> list[pa.Array]:
    """Ids and amounts like a usage file's, one cell in a hundred needing quotes or escapes."""
    rng = np.random.default_rng(0)
    columns = []
    for _ in range(width):
        cells = np.char.add("cus_", rng.integers(0, 10**9, rows).astype(str)).astype(object)
        cells[::100] = 'say "hi",\nthere'
        columns.append(pa.array(cells, pa.string()))
    return columns


if __name__ == "__main__":
    ROWS, WIDTH = 1_000_000, 7
    COLUMNS = _benchmark_columns(ROWS, WIDTH)
    _timed(f"join {ROWS} x {WIDTH} parts", lambda: join(COLUMNS, ROWS))
    _timed(f"csv_rows {ROWS} x {WIDTH}", lambda: csv_rows(COLUMNS))
    _timed(f"json_strings {ROWS} x {WIDTH}", lambda: [json_strings(c) for c in COLUMNS])


@given(
    st.lists(st.none() | st.text(alphabet='"ab\u00e9\u2028\U0001f600,', max_size=12), max_size=30),
    st.integers(0, 3),
    st.sampled_from([pa.string(), pa.large_string()]),
)
def test_byte_counts_count_as_str_count(
    values: list[str | None], skip: int, kind: pa.DataType
) -> None:
    """Per value, as `str.count` counts the character (0 where null), on a sliced array too."""
    array = pa.array(values, kind).slice(min(skip, len(values)))
    expected = [0 if v is None else v.count('"') for v in values[min(skip, len(values)) :]]
    assert byte_counts(array, ord('"')).tolist() == expected


@given(
    st.lists(MAYBE_TEXT, max_size=30),
    st.integers(0, 3),
    st.sampled_from([b'"\r\n,', b'"\r\n;', bytes(range(0x20)) + b'"\\', b"\x7f", b"%&'"]),
)
@example(['"ab', "cd", None], 0, b'"\r\n,')  # the only hit the data's first byte
@example(["ab", "c\x1f"], 1, bytes(range(0x20)) + b'"\\')  # a range's, past the slice start
def test_rows_holding_are_the_rows_whose_text_holds_a_byte(
    values: list[str | None], skip: int, wanted: bytes
) -> None:
    """The valid rows holding any of the bytes, on a sliced array too, whether the quick test
    for none at all (a search per byte, a minimum for a range from NUL) passes or not."""
    array = pa.array(values, pa.large_string()).slice(min(skip, len(values)))
    kept = values[min(skip, len(values)) :]
    chars = set(wanted.decode())
    expected = [i for i, v in enumerate(kept) if v is not None and chars & set(v)]
    assert rows_holding(array, wanted).tolist() == expected


@given(st.lists(st.none() | st.text(max_size=8), max_size=20), st.integers(0, 19))
def test_json_parts_join_to_json_dumps(values: list[str | None], pick: int) -> None:
    """Joined, the parts are json.dumps of each value (null as null), taken rows too; the
    inner text is there (quotes apart) only when no value is null."""
    array = pa.array(values, pa.string())
    parts = json_parts(array)
    expected = [json.dumps(v, ensure_ascii=False) for v in values]
    assert join(parts, len(values)).to_pylist() == expected
    assert (json_inner(array) is None) == (None in values)
    if values:
        at = pa.array([pick % len(values)])
        taken = join(take_parts(parts, at), 1).to_pylist()
        assert taken == [expected[pick % len(values)]]
