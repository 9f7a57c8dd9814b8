"""The digests' power tables are grown and published as one: a thread digesting text while
another grows them never takes the grown powers beside the old, shorter inverses."""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from remediation import rowdigest


def test_a_digest_made_while_another_thread_grows_the_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = pa.array(["x" * 900, "y" * 900, "z"], pa.string())
    expected = rowdigest.text_digests(texts)
    small = np.ones(1, np.uint64)
    # the tables as a fresh process has them (both spellings: one tuple, or two globals)
    monkeypatch.setattr(rowdigest, "_tables", (small, small), raising=False)
    monkeypatch.setattr(rowdigest, "_powers", small, raising=False)
    monkeypatch.setattr(rowdigest, "_inverses", small, raising=False)

    go, back = threading.Event(), threading.Event()
    seen: list[Any] = []

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code is not rowdigest._power_tables.__code__:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":  # before each instruction of the grower: the other thread digests
            go.set()
            back.wait(5)
            back.clear()
        return trace

    def grow() -> None:
        sys.settrace(trace)
        try:
            rowdigest._power_tables(4096)
        finally:
            sys.settrace(None)
            go.set()
            seen.append("done")

    def published_powers() -> Any:
        if "_tables" in rowdigest._power_tables.__code__.co_names:
            return rowdigest._tables[0]
        return rowdigest._powers  # the code before: two globals

    grower = threading.Thread(target=grow)
    grower.start()
    while not seen:
        go.wait(5)
        go.clear()
        if seen:
            break
        if len(published_powers()) < 1802:  # it would grow them itself: not this race
            back.set()
            continue
        try:
            got = rowdigest.text_digests(texts)
            seen_ok = bool((got == expected).all())
        except IndexError as exc:  # the old inverses, too short for the new powers
            seen_ok, got = False, exc
        if not seen_ok:
            seen.append(got)
        back.set()
    grower.join(5)
    assert seen == ["done"]
