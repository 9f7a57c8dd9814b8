"""Output files written on the spool's thread: bytes, order, digest, errors, the budget."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from itertools import accumulate
from pathlib import Path

import pyarrow as pa
import pytest

from remediation import spool
from remediation.spool import SpooledFile, open_spooled, write_shared

DEV_FULL = Path("/dev/full")


def test_a_spooled_file_hashes_and_counts_what_reaches_the_disk(tmp_path: Path) -> None:
    """Writes of any size and kind (through its buffer and past it, shared and copied), its
    size as `tell` says it while it is written, and the SHA-256 and lines of the bytes on
    disk once it is closed; a text layer over it writes what `open(path, "w")` writes."""
    path = tmp_path / "out.bin"
    binary, spooled = open_spooled(path, count_lines=True)
    long = b"x\n" * 300_000  # counted in slices, larger than the buffer
    pieces = [b"a\n", bytearray(b"\n\nb"), memoryview(long + b"\n"), b"", b"z" * 9000]
    sizes = []
    for piece in pieces:
        binary.write(piece)
        sizes.append(binary.tell())
    binary.close()
    data = path.read_bytes()
    assert data == b"".join(bytes(p) for p in pieces)
    assert sizes == list(accumulate(len(p) for p in pieces))
    assert spooled.hexdigest() == hashlib.sha256(data).hexdigest()
    assert spooled.lines == data.count(b"\n") == 300_004
    text_path = tmp_path / "out.txt"
    binary, spooled = open_spooled(text_path, count_lines=True)
    with io.TextIOWrapper(binary, encoding="utf-8") as text:
        text.write('{"é": "a\\nb"}\n')
        text.flush()
        text.buffer.write("ü\n".encode())
    assert text_path.read_bytes() == '{"é": "a\\nb"}\nü\n'.encode()
    assert spooled.lines == 2
    assert spooled.hexdigest() == hashlib.sha256(text_path.read_bytes()).hexdigest()


def test_shared_blocks_and_buffered_writes_reach_the_file_in_the_order_given(
    tmp_path: Path,
) -> None:
    """A header through the text layer, then blocks held by Arrow handed over without a copy,
    then more text: the bytes in that order, the blocks' buffers unchanged."""
    path = tmp_path / "out.csv"
    binary, spooled = open_spooled(path)
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
    expected = [b"head\r\n"]
    text.write("head\r\n")
    for n in range(50):
        block = pa.array([f"row {n} {'y' * n}\n" * 500]).buffers()[2]
        expected.append(block.to_pybytes())
        text.flush()
        write_shared(binary, memoryview(block))
        text.write(f"line {n}\n")  # buffered between the blocks
        expected.append(f"line {n}\n".encode())
    text.close()
    assert path.read_bytes() == b"".join(expected)
    assert spooled.hexdigest() == hashlib.sha256(b"".join(expected)).hexdigest()


def test_write_shared_writes_to_any_other_stream(tmp_path: Path) -> None:
    stream = io.BytesIO()
    write_shared(stream, memoryview(b"abc"))
    assert stream.getvalue() == b"abc"


def test_an_error_writing_is_raised_once_by_the_next_write_and_nothing_after_is_written() -> None:
    """A full disk (`/dev/full`): the error happens on the spool's thread; the writer sees it
    at its next write, not at close as well."""
    spooled = SpooledFile(DEV_FULL)
    spooled.write_shared(b"x" * 10_000)
    spooled.wait()  # written, and failed, by now
    with pytest.raises(OSError, match="No space left"):
        spooled.write_shared(b"more")
    spooled.write_shared(b"and more")  # reported already: not raised twice, not written
    spooled.close()


def test_an_error_writing_the_last_bytes_is_raised_by_close() -> None:
    binary, _ = open_spooled(DEV_FULL)
    binary.write(b"x" * 100)
    with pytest.raises(OSError, match="No space left"):
        binary.close()


def test_the_bytes_waiting_to_be_written_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer waits while the spool's thread holds `limit` bytes not yet written: the
    thread blocked here on its first job, the third write of 40 bytes (limit 100) waits
    until the thread moves on. A block larger than the limit goes alone."""
    budget = spool._Spool(100)
    release = threading.Event()
    done: list[bytes] = []

    def job(data: memoryview) -> None:
        release.wait(5)
        done.append(bytes(data))

    budget.submit(job, memoryview(b"a" * 40))
    budget.submit(job, memoryview(b"b" * 40))
    third = threading.Thread(target=budget.submit, args=(job, memoryview(b"c" * 40)))
    third.start()
    time.sleep(0.2)
    assert third.is_alive()  # waiting for room
    release.set()
    third.join(5)
    assert not third.is_alive()
    budget.submit(job, memoryview(b"d" * 500)).result(5)
    assert done == [b"a" * 40, b"b" * 40, b"c" * 40, b"d" * 500]
