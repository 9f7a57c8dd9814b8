"""JSON Lines corrected rows written as bytes from columns (`core.jsonlout`) are exactly what
the record writer writes for the same rows (`json.dumps` of `writers.record_object`): values
of every JSON kind, keys in each row's own order, rows whose keys a rule moved, outputs split
into parts. The reference run is the same engine with the bytes lane switched off."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import remediation.engine as engine
from remediation.core import jsonrows
from remediation.core.columns import Batch, Column, Kind
from remediation.core.jsonlout import JsonlOut
from remediation.core.keyorders import KeyOrders
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.identifiers import Ancestor, Lineage
from remediation.meters import Meter
from remediation.outcomes import corrections_of

from .test_csv_columns import LINEAGE, METERS, NOW, RULES

MORE_METERS = [*METERS, Meter("m4", "storage_gb")]
VALUES = st.sampled_from(
    [
        "cus_1",
        " cus_2 ",
        "acme-42",
        5,
        -3,
        0,
        "1,234",
        "12",
        12.5,
        1e16,
        1764000000.0,
        None,
        True,
        False,
        {"x": [1, "ü"]},
        [1, 2],
        'q"uote',
        "back\\slash",
        "tab\tin",
        "ü€𝄞",
        "",
        "L" * 101,
        float("inf"),
    ]
)
IDENTIFIERS = st.sampled_from(
    ["a1", "", None, 12, "x-r2", "b-r0", "a1-mfx1", 'd"q', "ü{}", "a\\b", "L" * 97, "t\tab"]
)
TIMESTAMPS = st.sampled_from(
    [
        NOW,
        NOW - 60,
        NOW * 1000 + 5,
        NOW * 10**6,
        str(NOW),
        str(NOW * 1000),
        NOW + 1000,
        NOW - 40 * 86400,
        1764000000.0,
        1.5,
        "x",
        None,
        True,
        [1],
        "2025-11-24T16:00:00Z",
    ]
)
EVENT_NAMES = st.sampled_from(
    ["api_requests", "API-Requests", "api-call", "tokens", "tokens_v1", "nope", "", None, 7]
)
CODES = st.sampled_from(
    [
        None,
        "timestamp_in_future",
        "meter_event_invalid_value",
        "no_meter",
        "archived_meter",
        "meter_event_customer_not_found",
        "odd_code",
    ]
)
PAYLOAD_KEYS = ["stripe_customer_id", "value", "tokens", "note", "ü-key", 'k"q']


VALID = {"identifier": "a1", "timestamp": NOW, "event_name": "api_requests"}
VALID_PAYLOAD = {"stripe_customer_id": "cus_1", "value": 5, "tokens": 7}


@st.composite
def rows(draw: Any) -> dict[str, Any]:
    """A row whose fields are mostly valid (so that most rows are written, corrected or
    not), each one sometimes anything; keys in any order."""

    def field(strategy: Any, valid: Any) -> Any:
        return draw(strategy) if draw(st.integers(0, 3)) == 0 else valid

    obj: dict[str, Any] = {}
    core = draw(st.permutations(["identifier", "timestamp", "event_name", "payload"]))
    keys = draw(st.lists(st.sampled_from(PAYLOAD_KEYS), unique=True, max_size=4))
    keys = draw(st.permutations(list(dict.fromkeys(["stripe_customer_id", "value", *keys]))))
    strategies = {"identifier": IDENTIFIERS, "timestamp": TIMESTAMPS, "event_name": EVENT_NAMES}
    for name in core:
        if name == "payload":
            if draw(st.integers(0, 9)):
                obj["payload"] = {key: field(VALUES, VALID_PAYLOAD.get(key, "n")) for key in keys}
        elif draw(st.integers(0, 9)):
            obj[name] = field(strategies[name], VALID[name])
    for extra in draw(st.lists(st.sampled_from(["zeta", "mfx_code", "alpha"]), unique=True)):
        obj[extra] = draw(VALUES)
    code = draw(CODES)
    if code is not None:
        obj["error"] = {"code": code, "message": "m"}
    return obj


def to_jsonl(objects: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects).encode()


class _RecordsOnly(JsonlOut):
    def usable(self) -> bool:
        return False


class _Counted(JsonlOut):
    batches = 0  # batches written as bytes

    def write(self, decided: Any, tally: Any) -> bool:
        done = super().write(decided, tally)
        _Counted.batches += done
        return done


def run(
    data: bytes, out: Path, as_bytes: bool, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, bytes], list[Any]]:
    with monkeypatch.context() as patch:
        patch.setattr(engine, "JsonlOut", _Counted if as_bytes else _RecordsOnly)
        entries: list[Any] = []
        result = remediate(
            read_records(io.BytesIO(data), FileFormat.JSONL),
            source="failed.jsonl",
            fmt=FileFormat.JSONL,
            meters=MORE_METERS,
            rules=RULES,
            now=NOW,
            out_dir=out,
            on_audit=lambda done, held: entries.extend([*corrections_of(done), *held]),
            **kwargs,
        )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return (
        dict(result.summary, outputs=None),
        files,
        sorted(entries, key=lambda e: e[1]),
    )  # row: both kinds' 2nd field


def assert_same(data: bytes, tmp: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> None:
    reference = run(data, tmp / "records", False, monkeypatch, **kwargs)
    assert run(data, tmp / "bytes", True, monkeypatch, **kwargs) == reference


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    objects=st.lists(rows(), min_size=1, max_size=40),
    keep=st.booleans(),
    rejected=st.booleans(),
    lineage=st.booleans(),
)
def test_bytes_are_what_records_write(
    objects: list[dict[str, Any]],
    keep: bool,
    rejected: bool,
    lineage: bool,
    tmp_path_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp = tmp_path_factory.mktemp("jsonl")
    more = {"lineage": LINEAGE} if lineage else {}
    identifiers = "keep" if keep else "derive"
    data = to_jsonl(objects + objects)
    assert_same(data, tmp, monkeypatch, identifiers=identifiers, rejected=rejected, **more)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(objects=st.lists(rows(), min_size=1, max_size=40), keep=st.booleans())
def test_rows_of_every_layout_written_at_once_are_what_records_write(
    objects: list[dict[str, Any]],
    keep: bool,
    tmp_path_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rows of a batch written all at once (as a batch of many layouts is: keys joined in
    one order every row's own follows), not a layout at a time; rows whose key orders
    disagree go a layout at a time still."""
    monkeypatch.setattr(jsonrows, "FEW_LAYOUTS", 0)
    tmp = tmp_path_factory.mktemp("jsonl")
    identifiers = "keep" if keep else "derive"
    assert_same(to_jsonl(objects + objects), tmp, monkeypatch, identifiers=identifiers)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    objects=st.lists(rows(), min_size=1, max_size=12),
    own=st.lists(st.lists(VALUES, max_size=5), min_size=12, max_size=12),
    share=st.booleans(),
)
def test_rows_naming_keys_of_their_own_are_what_records_write(
    objects: list[dict[str, Any]],
    own: list[list[Any]],
    share: bool,
    tmp_path_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows whose payload names keys no other row does (a batch of more than `MANY_KEYS`
    keys, however few its layouts): written at once, each row's pairs side by side, not three
    parts a key of the batch; values of every kind, a key held without a value, rows sharing
    a key (`share`) or not."""
    for at, (obj, values) in enumerate(zip(objects, own, strict=False)):
        payload = obj.get("payload")
        if isinstance(payload, dict):
            mine = {f"own{at}_{n}": value for n, value in enumerate(values)}
            obj["payload"] = {**payload, **mine, **({"shared": at} if share else {})}
    tmp = tmp_path_factory.mktemp("jsonl")
    assert_same(to_jsonl(objects + objects), tmp, monkeypatch)
    monkeypatch.setattr(jsonrows, "MANY_KEYS", 0)  # every batch written at once
    assert_same(to_jsonl(objects), tmp / "at-once", monkeypatch)


def test_many_optional_keys_are_written_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows with optional payload and other keys (64 layouts in a batch) are written as
    records write them, in one pass over the keys, not one per layout."""
    rng = random.Random(3)
    objects = []
    for i in range(400):
        obj = dict(varied(1, i)[0])
        payload = dict(obj["payload"])
        for bit in range(5):
            if rng.random() < 0.5:
                payload[f"dim{bit}"] = bit if bit % 2 else f"v{i % 3}"
        obj["payload"] = payload
        if rng.random() < 0.5:
            obj["zeta"] = i
        objects.append(obj)
    calls: list[int] = []
    original = jsonrows.all_at_once

    def counted(*args: Any) -> Any:
        found = original(*args)
        calls.append(found is not None)
        return found

    monkeypatch.setattr(jsonrows, "all_at_once", counted)
    assert_same(to_jsonl(objects), tmp_path, monkeypatch)
    assert calls and all(calls)


def varied(count: int, seed: int) -> list[dict[str, Any]]:
    """Rows like a real failed-records file: mostly one layout, the basic fixes."""
    rng = random.Random(seed)
    objects = []
    for i in range(count):
        obj: dict[str, Any] = {
            "identifier": f"{rng.getrandbits(64):016x}" + ("-r1" if i % 97 == 0 else ""),
            "timestamp": NOW - rng.randrange(86400),
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": f"cus_{rng.randrange(10**6)}", "value": i % 50},
        }
        kind = rng.randrange(5)
        if kind == 0:
            obj["timestamp"] = obj["timestamp"] * 1000 + rng.randrange(999)
            obj["error"] = {"code": "timestamp_in_future", "message": "m"}
        elif kind == 1:
            obj["payload"]["value"] = f"{rng.randrange(1, 999)},{rng.randrange(1000):03d}"
            obj["error"] = {"code": "meter_event_invalid_value", "message": "m"}
        elif kind == 2:
            obj["event_name"] = "tokens_v1"  # moved: the value key is renamed
            obj["error"] = {"code": "archived_meter", "message": "m"}
        elif kind == 3:
            obj["payload"] = {"value": 3, "stripe_customer_id": "acme-42", "note": "ü"}
            obj["error"] = {"code": "meter_event_customer_not_found", "message": "m"}
        objects.append(obj)
    return objects


@pytest.mark.parametrize("keep", [False, True])
def test_varied_rows_in_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool) -> None:
    objects = varied(3000, 7)
    lineage = Lineage(
        {o["identifier"]: Ancestor(o["identifier"][:-3], None, 1) for o in objects[::97]}
    )
    identifiers = "keep" if keep else "derive"
    data = to_jsonl(objects)
    assert_same(data, tmp_path, monkeypatch, identifiers=identifiers, max_rows=700, lineage=lineage)
    _Counted.batches = 0
    _, files, _ = run(data, tmp_path / "again", True, monkeypatch, max_rows=700)
    corrected = [name for name in files if "corrected" in name]
    assert _Counted.batches >= 1  # the bytes lane wrote them
    assert len(corrected) >= 4  # split into parts of 700 rows
    first = json.loads(files[corrected[0]].splitlines()[0])
    assert first["identifier"] == objects[0]["identifier"] + "-mfx1"  # renamed, as written


def test_quarantined_rows_are_what_records_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quarantined lines are written on columns (their code and reason closing each line) as
    the record writer writes them: identifiers and event names that were numbers as those
    numbers (the reader reads them as text, and keeps the number for a quarantined row),
    timestamps and values as they came, nulls and booleans too; a batch holding an object
    goes record by record. Every row here is quarantined."""
    bad = {"code": "odd_code", "message": "m"}
    payload = {"stripe_customer_id": "cus_1", "value": "n/a", "note": 'q"ü', "z": None}
    plain = [
        {"identifier": 41, "timestamp": NOW, "event_name": 7, "payload": payload, "error": bad},
        {"identifier": 4.5, "timestamp": 1.5, "event_name": "nope", "payload": {}, "error": bad},
        {"event_name": "api_requests", "payload": payload, "zeta": None, "error": bad},
        {"identifier": "a\nb", "timestamp": True, "payload": payload, "mfx_code": 1, "error": bad},
        {"identifier": "n1", "timestamp": None, "event_name": False, "error": bad},
    ]
    odd = [{"event_name": "api_requests", "payload": payload, "zeta": {"a": [1, 2]}, "error": bad}]
    for objects in (plain, plain + odd):
        data = to_jsonl(objects * 3) + b"{broken\n"
        out = tmp_path / str(len(objects))
        assert_same(data, out, monkeypatch)
        _, files, _ = run(data, out / "again", True, monkeypatch)
        lines = files["failed.quarantine.r1.jsonl"].decode().splitlines()
        assert len(lines) == 3 * len(objects) + 1
        first = json.loads(lines[0])
        assert (first["identifier"], first["event_name"]) == (41, 7)
        assert list(first)[-2:] == ["mfx_code", "mfx_reason"]


@pytest.mark.parametrize("layouts", [0, 100])
def test_rows_write_null_for_a_key_held_without_a_value(
    monkeypatch: pytest.MonkeyPatch, layouts: int
) -> None:
    """A row whose key order holds a key its column has no value for writes `null` there,
    whether its batch is written at once (`FEW_LAYOUTS` 0) or a layout at a time; numbers
    bare, strings quoted and escaped, other keys after the payload, our own `mfx_` keys left
    out, a key order no other follows written in its own group."""
    monkeypatch.setattr(jsonrows, "FEW_LAYOUTS", layouts)
    kinds = np.asarray([Kind.INT, Kind.TEXT, Kind.INT, Kind.TEXT, Kind.INT], np.uint8)
    texts = {
        "value": Column(pa.array(["5", None, "7", "x", "9"], pa.string()), kinds),
        "note": Column(pa.array([None, "y", None, 'q"', "z"], pa.string())),
    }
    others = {
        "zeta": Column(pa.array(["1", None, None, None, "2"]), np.full(5, Kind.INT, np.uint8)),
        "mfx_code": Column(pa.array(["c"] * 5, pa.string())),
    }
    orders = KeyOrders(
        [
            (("value", "note"), ("zeta", "mfx_code")),
            (("note",), ("mfx_code",)),
            (("value",), ()),
            (("note", "value"), ("mfx_code", "zeta")),
        ],
        np.asarray([0, 0, 1, 2, 3], np.int32),
    )
    batch = Batch(
        np.arange(1, 6, dtype=np.int64),
        Column(pa.array(list("abcde"), pa.string())),
        Column(pa.array(["1", "2", "3", "4", "5"]), np.full(5, Kind.INT, np.uint8)),
        Column(pa.array(["m"] * 5, pa.string())),
        texts,
        others,
        pa.nulls(5, pa.string()),
        pa.nulls(5, pa.string()),
        pa.nulls(5, pa.string()),
        orders,
    )
    objects: list[dict[str, Any]] = [
        {"payload": {"value": 5, "note": None}, "zeta": 1},
        {"payload": {"value": None, "note": "y"}, "zeta": None},
        {"payload": {"note": None}},
        {"payload": {"value": "x"}},
        {"payload": {"note": "z", "value": 9}, "zeta": 2},
    ]
    expected = [
        json.dumps(
            {"identifier": i, "timestamp": t, "event_name": "m", **obj},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for i, t, obj in zip("abcde", range(1, 6), objects, strict=True)
    ]
    assert jsonrows.row_texts(batch, batch.identifier.text).to_pylist() == expected
