"""The poller's copy of an object beats while it runs: a copy of a large object beat nothing
for as long as it took, and past MFX_HEARTBEAT_SILENCE the critical silence alert said the
poller was stuck and to restart the worker (a healthy download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.adapters.bucket import open_bucket
from service.poller import snapshot
from service.poller.snapshot import take_snapshot


def test_a_long_copy_beats_between_its_chunks(
    make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = open_bucket(make_settings())
    body = b"r,1764000000\n" * 300_000  # ~3.9 MB: four chunks of 1 MiB
    source = tmp_path / "big.csv"
    source.write_bytes(body)
    bucket.upload(source, "big.csv", {})
    obj = bucket.head("big.csv")
    assert obj is not None
    monkeypatch.setattr(snapshot, "BEAT_EVERY", 0.0)  # a beat after every chunk
    beats: list[int] = []
    copy = take_snapshot(bucket, obj, tmp_path / "work", lambda: None, lambda: beats.append(1))
    assert copy.read_bytes() == body
    assert len(beats) == 4
