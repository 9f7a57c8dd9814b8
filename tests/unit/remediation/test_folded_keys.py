"""Rows naming payload keys of their own have those keys folded into one value of their pairs
a run (`core.folding`), and the run's outcome is the one the same rows give unfolded: the
same summary, corrected and quarantine files byte for byte, audit records. Keys a rule or a
check reads by column (the meters' and the rules' keys, in any case), values a check suspects
(long, control characters, odd floats, objects) and rows whose rule drops or renames keys
(a meter's dimensions, aliases) included.

What happened: every distinct key of a batch was a column, worked on by every check, rule,
take and writer: 20,000 rows of 5 keys of their own took 16 s (60x the `json` copy), 100,000
rows 90 s, so a file of a million such rows passed the worker's time limit (900 s)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.core import folding
from remediation.core.batch import from_records
from remediation.core.folding import fold
from remediation.core.keyorders import FoldedKey
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.outcomes import corrections_of
from remediation.records import UsageRecord
from remediation.rules import load_rules

from .test_csv_columns import LINEAGE, NOW
from .test_jsonl_columns import MORE_METERS, rows, to_jsonl

METERS = [*MORE_METERS, Meter("m5", "regions", dimension_keys=("region", "Zone"))]
RULES = load_rules(
    '[customers]\n"acme-42" = "cus_Q1"\n'
    '[meter_successors]\n"tokens_v1" = "tokens"\n'
    '[event_names]\n"api-call" = "api_requests"\n'
    '[dimension_aliases]\nregion = ["area"]\n'
)
OWN_VALUES = st.sampled_from(
    [
        "x",
        "",
        "ü€𝄞",
        'q"uote',
        "back\\slash",
        "tab\tin",
        "\u2028",
        "L" * 101,
        "é" * 60,
        0,
        -7,
        10**25,
        12.5,
        1.0,
        1e-05,
        float("inf"),
        True,
        False,
        None,
        {"n": 1},
        [1],
    ]
)
# keys of their own, and names rules read by column in another case, or spelled oddly
OWN_KEYS = st.one_of(
    st.builds(lambda n: f"own_{n}", st.integers(0, 10**6)),
    st.sampled_from(["Customer_ID", "VALUE", "tokens", "Region", "area", "zone", "Zone"]),
    st.sampled_from(["k" * 101, "tab\tkey", "ü-key", 'k"q', ""]),
)


@st.composite
def own_rows(draw: Any) -> dict[str, Any]:
    obj: dict[str, Any] = draw(rows())
    if draw(st.integers(0, 4)) == 0:
        obj["event_name"] = "regions"
    if draw(st.integers(0, 4)) == 0:
        obj["error"] = {"code": "meter_event_dimension_count_too_high", "message": "m"}
    payload = obj.get("payload")
    if isinstance(payload, dict):
        pairs = list(payload.items())
        for key in draw(st.lists(OWN_KEYS, max_size=6)):
            at = draw(st.integers(0, len(pairs)))
            pairs.insert(at, (key, draw(OWN_VALUES)))
        obj["payload"] = dict(pairs)
    return obj


def run(
    data: bytes, out: Path, fmt: FileFormat = FileFormat.JSONL, **kwargs: Any
) -> tuple[Any, ...]:
    entries: list[Any] = []
    result = remediate(
        read_records(io.BytesIO(data), fmt),
        source=f"failed.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        on_audit=lambda done, held: entries.extend([*corrections_of(done), *held]),
        **kwargs,
    )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return dict(result.summary, outputs=None), files, sorted(entries, key=lambda e: e[1])


def folds(monkeypatch: pytest.MonkeyPatch, past: int, share: float = 1.0) -> None:
    monkeypatch.setattr(folding, "FOLD_PAST", past)
    monkeypatch.setattr(folding, "FOLDED_SHARE", share)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    objects=st.lists(own_rows(), min_size=1, max_size=30),
    rejected=st.booleans(),
    lineage=st.booleans(),
    share=st.sampled_from([folding.FOLDED_SHARE, 1.0]),
    array=st.booleans(),
)
def test_folded_rows_decide_and_write_as_unfolded(
    objects: list[dict[str, Any]],
    rejected: bool,
    lineage: bool,
    share: float,
    array: bool,
    tmp_path_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp = tmp_path_factory.mktemp("folded")
    data = json.dumps(objects).encode() if array else to_jsonl(objects)
    more: dict[str, Any] = {"rejected": rejected} | ({"lineage": LINEAGE} if lineage else {})
    more["fmt"] = FileFormat.JSON if array else FileFormat.JSONL
    with monkeypatch.context() as patch:
        folds(patch, 10**9)  # never
        reference = run(data, tmp / "unfolded", **more)
    with monkeypatch.context() as patch:
        folds(patch, 0, share)  # whenever a key may be (of any share of the rows, or a few)
        assert run(data, tmp / "folded", **more) == reference


def _record(at: int, payload: dict[str, object]) -> UsageRecord:
    return UsageRecord(at + 1, f"r{at}", NOW, "api_requests", payload)


def test_a_batch_folds_the_rare_keys_no_rule_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of rare keys become one value each, the text their pairs are written as; keys a
    rule reads, common keys and suspect values stay columns; records read them back."""
    from remediation.changes import Context
    from remediation.validation import MeterIndex

    folds(monkeypatch, 0, 0.5)
    records = [
        _record(0, {"stripe_customer_id": "cus_1", "a0": 1, "b0": 'x"y', "value": 3, "c0": None}),
        _record(1, {"stripe_customer_id": "cus_2", "Customer_ID": "c", "value": 4, "a1": 2.5}),
        _record(2, {"stripe_customer_id": "cus_3", "value": 5, "long": "L" * 101, "d2": True}),
        _record(3, {"stripe_customer_id": "cus_4", "value": 6}),
    ]
    batch = from_records(records)
    ctx = Context(MeterIndex(METERS), RULES, NOW)
    folded = fold(batch, ctx)
    keys = list(folded.payload)
    assert keys[:4] == ["stripe_customer_id", "value", "Customer_ID", "long"]
    names = keys[4:]
    assert all(type(name) is FoldedKey for name in names) and len(names) == 2
    assert folded.payload[names[0]].text.to_pylist() == [
        '"a0":1,"b0":"x\\"y"',
        '"a1":2.5',
        '"d2":true',
        None,
    ]
    assert folded.payload[names[1]].text.to_pylist() == ['"c0":null', None, None, None]
    assert folded.order is not None
    assert folded.order[0] == (("stripe_customer_id", names[0], "value", names[1]), ())
    assert [r.payload for r in folded.records()] == [r.payload for r in records]
    assert [list(r.payload) for r in folded.records()] == [list(r.payload) for r in records]


def test_rows_a_rule_handles_one_by_one_go_back_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule's rows handled one record at a time (`one_by_one`) come back into their batch
    with the keys it holds folded folded again, whatever their share of those rows; a key
    the batch holds as a column, or one a rule reads, stays a column.

    Before (`rules.base.put`): each of their keys came back as a column of the whole batch
    (~12 % of a run of rows naming 40 of 200 keys each)."""
    from remediation.changes import Change, Context
    from remediation.core.rules.base import one_by_one
    from remediation.validation import MeterIndex

    folds(monkeypatch, 0, 0.5)
    records = [
        _record(at, {"stripe_customer_id": f"cus_{at}", "value": at, f"own{at}": at, "x": 1})
        for at in range(6)
    ]
    ctx = Context(MeterIndex(METERS), RULES, NOW)
    folded = fold(from_records(records), ctx)
    assert [k for k in folded.payload if type(k) is str] == ["stripe_customer_id", "value", "x"]

    def renamed(record: UsageRecord, _: Context) -> list[Change]:  # a key of its own, moved
        payload = dict(record.payload)
        payload["Zone"] = payload.pop(f"own{record.row_number - 1}")
        record.payload = payload
        return [Change("rule", "payload.Zone", None, payload["Zone"])]

    fix = one_by_one(folded, ctx, renamed, np.asarray([1, 4]))
    after = fix.batch
    plain = [k for k in after.payload if type(k) is str]
    assert plain == ["stripe_customer_id", "value", "x", "Zone"]  # a meter's dimension key
    assert [r.payload for r in after.records()] == [
        {"stripe_customer_id": f"cus_{at}", "value": at, "x": 1, "Zone": at}
        if at in (1, 4)
        else {"stripe_customer_id": f"cus_{at}", "value": at, f"own{at}": at, "x": 1}
        for at in range(6)
    ]
    untouched = one_by_one(folded, ctx, lambda record, _: [], np.asarray([0, 2, 3])).batch
    assert list(untouched.payload) == list(folded.payload)
    assert [r.payload for r in untouched.records()] == [r.payload for r in records]


def test_a_batch_of_few_keys_is_not_folded() -> None:
    from remediation.changes import Context
    from remediation.validation import MeterIndex

    batch = from_records([_record(at, {"value": 1, f"own{at}": at}) for at in range(10)])
    assert fold(batch, Context(MeterIndex(METERS), RULES, NOW)) is batch


def test_the_bench_rows_of_keys_of_their_own_are_written_as_read(tmp_path: Path) -> None:
    """Rows of five keys of their own each, through the engine: every row's keys, values and
    order in the corrected file as they came (the bench's `--own-keys` rows)."""
    objects = []
    for at in range(300):
        own = {f"k{at}_{n}": n for n in range(5)}
        payload = {"stripe_customer_id": f"cus_{at}", "value": at, **own}
        objects.append(
            {"identifier": f"id{at}", "timestamp": (NOW - at) * 1000, "event_name": "api_requests"}
            | {"payload": payload, "error": {"code": "timestamp_in_future", "message": "m"}}
        )
    run(to_jsonl(objects), tmp_path)
    lines = (tmp_path / "failed.corrected.r1.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]
    assert [o["payload"] for o in written] == [o["payload"] for o in objects]
    assert [list(o["payload"]) for o in written] == [list(o["payload"]) for o in objects]
