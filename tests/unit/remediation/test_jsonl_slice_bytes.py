"""JSON Lines are read into batches of at most `SLICE_BYTES` bytes of lines (a longer line
alone), not only of at most so many lines: rows holding long texts (an error message of 10 kB,
a note of 2 MB) make batches of fewer rows, and the outputs are the same.

What happened: a batch was 8,192 lines whatever their length: 50 lines of 2 MB (a 100 MB
file) took 944 MB through `meterfix remediate`, the same rows as CSV 110 MB."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from remediation.core import jsonlread
from remediation.engine import batches, remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.rules import load_rules

NOW = 1_764_000_000
LIMIT = 10_000


def _lines() -> bytes:
    rng = random.Random(5)
    out = []
    for at in range(400):
        note = "n" * rng.choice([0, 10, 3_000, 9_000, 25_000])
        row = {
            "identifier": f"r{at}",
            "timestamp": (NOW - 60) * 1000,
            "event_name": "api_requests",
            "payload": {"stripe_customer_id": f"cus_{at % 7}", "value": at},
            "note": note,
            "error": {"code": "timestamp_in_future", "message": "m" * rng.choice([1, 4_000])},
        }
        out.append(json.dumps(row))
    return ("\n".join(out) + "\n").encode()


def _run(data: bytes, out: Path) -> dict[str, bytes]:
    remediate(
        read_records(io.BytesIO(data), FileFormat.JSONL),
        source="failed.jsonl",
        fmt=FileFormat.JSONL,
        meters=[Meter("m1", "api_requests")],
        rules=load_rules(""),
        now=NOW,
        out_dir=out,
    )
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_batches_hold_at_most_the_slice_bytes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = _lines()
    lines = data.splitlines()
    reference = _run(data, tmp_path / "whole")
    whole = [len(b) for b in batches(read_records(io.BytesIO(data), FileFormat.JSONL), 8192)]
    assert whole == [400]
    monkeypatch.setattr(jsonlread, "SLICE_BYTES", LIMIT)
    sizes = []
    at = 0
    for batch in batches(read_records(io.BytesIO(data), FileFormat.JSONL), 8192):
        held = sum(len(line) for line in lines[at : at + len(batch)])
        assert held <= LIMIT or len(batch) == 1, (at, len(batch), held)
        assert batch.rows.tolist() == list(range(at + 1, at + len(batch) + 1))
        at += len(batch)
        sizes.append(len(batch))
    assert at == 400 and len(sizes) > 100  # cut by bytes, many times
    assert max(sizes) > 1  # short lines share a batch
    assert _run(data, tmp_path / "sliced") == reference


def _own_keys(rows: int, keys: int) -> bytes:
    out = []
    for at in range(rows):
        payload: dict[str, object] = {"stripe_customer_id": "cus_1", "value": at}
        payload.update({f"r{at}k{k}": k for k in range(keys)})
        out.append(json.dumps({"identifier": f"r{at}", "timestamp": NOW, "payload": payload}))
    return ("\n".join(out) + "\n").encode()


def test_the_shapes_a_file_remembers_are_bounded_by_their_pieces(tmp_path: Path) -> None:
    """Rows each naming 400 keys of their own are each a shape of its own: a file remembers
    shapes (their layouts) up to `MAX_SHAPE_PIECES` pieces, not up to 1,024 of any size.

    Before: 1,024 shapes of 500-key rows held ~270 MB (4,000 such rows: a peak of 453 MB,
    1,031 MB for 10,000); rows past the budget are read by the line reader, as rows of a
    shape past `MAX_SHAPES` always were, with the same outputs."""
    from remediation.core import jsonlshapes
    from remediation.core.jsonlread import JsonlBatches

    data = _own_keys(400, 400)
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    reader = JsonlBatches(text, 32, 8192)
    assert sum(len(batch) for batch in reader) == 400
    layouts = [layout for layout in reader.shapes.known.values() if layout is not None]
    assert 0 < len(layouts) < 400
    assert sum(layout.pieces for layout in layouts) < jsonlshapes.MAX_SHAPE_PIECES + max(
        layout.pieces for layout in layouts
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jsonlshapes, "MAX_SHAPE_PIECES", 10**9)
        unbounded = _run(data, tmp_path / "unbounded")
    assert _run(data, tmp_path / "bounded") == unbounded


def test_records_are_batched_within_their_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records (a JSON array's elements the array reader reads) are cut where their texts
    would pass `MAX_BATCH_CHARS` (a longer record alone). Before: 50 elements of 2 MB were
    one batch (439 MB of a 100 MB file's peak; 120 MB now)."""
    from remediation.core import batchbounds
    from remediation.records import UsageRecord

    monkeypatch.setattr(batchbounds, "MAX_BATCH_CHARS", 1_000)
    records = [
        UsageRecord(at + 1, f"r{at}", NOW, "api_requests", {"note": "n" * (at % 4) * 300})
        for at in range(40)
    ]
    found = list(batchbounds.record_batches(records, 4096))
    assert [r.row_number for b in found for r in b.records()] == list(range(1, 41))
    for batch in found:
        texts = [(r.identifier, r.event_name, r.payload["note"]) for r in batch.records()]
        chars = sum(len(str(text)) for row in texts for text in row)
        assert chars <= 1_000 or len(batch) == 1
    assert 10 < len(found) < 40
