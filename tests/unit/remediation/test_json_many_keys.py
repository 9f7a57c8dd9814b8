"""JSON rows that each name payload keys of their own, through `meterfix remediate` (the engine)
and the poller's validation (`import_chunks`), as JSON Lines and as a JSON array. README,
"Bounded input": "no file can hang, crash or exhaust the remediation or the poller".

What happened: every distinct key of a batch is a column of it, worked on by every check and
writer, so a batch costs its rows times its distinct keys: rows each with keys built from ids
(`"k_8f3a":1`) cost the square of their number, 2,000 rows of 5 keys of their own (0.5 MB)
took 20 s and a 50 MB file would have taken hours. A batch is now cut where its cells (rows
times distinct keys) would pass a budget; what is written is the same as before, byte for
byte."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from remediation.core import batchbounds, jsonlread
from remediation.core.batchbounds import MAX_BATCH_KEYS
from remediation.core.columns import Batch
from remediation.engine import batches, remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.poller import import_chunks
from remediation.rownames import RowNames
from remediation.rules import Rules
from remediation.validation import MeterIndex

NOW = 1_764_000_000
METERS = [Meter("m1", "api_requests")]
FORMATS = [FileFormat.JSONL, FileFormat.JSON]
ERROR = ',"error":{"code":"meter_event_invalid_value","message":"rejected"}'


def _own_keys(row: int, count: int) -> str:
    return "".join(f',"k{row:x}_{key}":{key}' for key in range(count))


def _row(row: int, keys: int) -> str:
    """A row whose payload names `keys` keys no other row names; every third one corrected,
    every seventh one quarantined (a value that is no number), every eleventh one without an
    identifier, every thirteenth one repeating the identifier before it."""
    value = '"1,234"' if row % 3 == 0 else ('"many"' if row % 7 == 0 else str(row))
    error = ERROR if row % 3 == 0 or row % 7 == 0 else ""
    name = f'"identifier":"r{row - (row % 13 == 0)}",' if row % 11 else ""
    shared = ',"region":"eu"' if row % 2 else ""
    return (
        f'{{{name}"timestamp":{NOW - 3600 - row},"event_name":"api_requests",'
        f'"payload":{{"stripe_customer_id":"cus_{row % 5}","value":{value}{shared}'
        f"{_own_keys(row, keys)}}}{error}}}"
    )


def _rows(count: int, keys: int, fmt: FileFormat | None = None) -> list[str]:
    """`count` rows; with `fmt`, a broken line (JSON Lines), and a row with an escape in its
    middle (the rest of a JSON array is then read by the array reader)."""
    rows = [_row(row, keys) for row in range(1, count + 1)]
    if fmt is FileFormat.JSONL:
        rows[count // 5] = '{"identifier":"broken","payload":'
    if fmt is not None:
        rows[count // 2] = rows[count // 2].replace('"cus_', '"cus\\u005f')
    return rows


def _file(rows: list[str], fmt: FileFormat) -> bytes:
    if fmt is FileFormat.JSON:
        return ("[\n" + ",\n".join(rows) + "\n]\n").encode()
    return ("\n".join(rows) + "\n").encode()


def _remediated(out_dir: Path, data: bytes, fmt: FileFormat) -> dict[str, Any]:
    """The summary (without the output paths, and without the whole-file repairs said since
    the digests were pinned: none here) and every file written, by name."""
    result = remediate(
        read_records(io.BytesIO(data), fmt),
        source=f"in.{fmt.value}",
        fmt=fmt,
        meters=METERS,
        rules=Rules(),
        now=NOW,
        out_dir=out_dir,
    )
    assert result.summary["repairs"] == []
    summary = {k: v for k, v in result.summary.items() if k not in ("outputs", "repairs")}
    files = {path.name: path.read_bytes() for path in sorted(out_dir.iterdir())}
    return {"summary": summary, "files": files}


def _polled(data: bytes, fmt: FileFormat) -> dict[str, Any]:
    """The events the poller sends, its failed rows and its row references, chunk by chunk."""
    chunks = import_chunks(
        read_records(io.BytesIO(data), fmt),
        MeterIndex(METERS),
        now=NOW,
        names=RowNames(f"in.{fmt.value}", "t"),
    )
    return {
        "chunks": [
            {
                "events": chunk.events,
                "rows": [list(row) for row in chunk.rows],
                "failed": [
                    [r.row_number, r.error_code, r.error_message, r.malformed, r.payload, r.extra]
                    for r in chunk.failed
                ],
            }
            for chunk in chunks
        ]
    }


def _digest(found: Any) -> str:
    if isinstance(found, dict) and "files" in found:
        found = {
            **found,
            "files": {n: hashlib.sha256(b).hexdigest() for n, b in found["files"].items()},
        }
    return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()


# --- the time: about linear in the rows --------------------------------------------------

ROWS = 1000  # 4,000 rows of 5 keys of their own: 20,000 distinct keys in one batch before
KEYS = 5
# 4 times the rows may take at most 6 times the CPU time: linear is 4, quadratic (what this
# guards against) 16, n^1.3 already past 6; 5.0 failed once at 5.1 on a loaded CI (c7c78a9),
# where cache misses from other processes raise the larger run's CPU time more
MOST = 6.0


def _seconds(run: Any, runs: int) -> float:
    """The CPU seconds `run` takes (every thread of the process), the least of `runs` runs."""
    times = []
    for _ in range(runs):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


# Each case takes ~25 s of CPU: both paths and both formats, in two cases (the writers' output
# is pinned for all four by `test_rows_of_keys_of_their_own_are_written_as_before`)
@pytest.mark.parametrize(
    ("path", "fmt"), [("remediate", FileFormat.JSONL), ("poller", FileFormat.JSON)]
)
def test_rows_of_keys_of_their_own_take_time_linear_in_their_number(
    tmp_path: Path, fmt: FileFormat, path: str
) -> None:
    """Before: every case here ran its 4,000 rows past the test's 120 s timeout (one batch of
    20,000 columns of 4,000 rows); through `remediate` (JSON Lines) 500 rows took 1.1 s of CPU,
    2,000 rows 5.9 s. Now 1,000 rows 4.9 s, 4,000 rows 16.1 s (3.3 times; the poller 3.1)."""
    small, large = (_file(_rows(count, KEYS), fmt) for count in (ROWS, 4 * ROWS))

    def run(data: bytes) -> Any:
        if path == "poller":
            return lambda: _polled(data, fmt)
        places = iter(range(10))
        return lambda: _remediated(tmp_path / f"{len(data)}-{next(places)}", data, fmt)

    took_small = _seconds(run(small), 2)  # the first run warms up what a run uses once
    took_large = _seconds(run(large), 1)
    assert took_large <= MOST * took_small, (
        f"{4 * ROWS} rows took {took_large:.2f} s CPU, {ROWS} rows {took_small:.2f} s: "
        f"{took_large / took_small:.1f} times"
    )


# --- what is written: the same as before -------------------------------------------------

# Written by the code before the batches were cut (1,000 rows of 4 keys of their own: 4,000
# distinct keys; now 3 or 4 batches): digests of the summary and every file
# `remediate` writes, and of every chunk the poller yields. `remediate`'s since the rows sent
# again under the identifier of a valid row (billed) are quarantined: 36 of the thirteenth
# rows and the rows before them, 332 -> 296 corrected (JSON 333 -> 297), the rest the same;
# their `mfx_code` is `identifier_taken` since (was the code they arrived with).
PINNED = {
    (
        FileFormat.JSONL,
        "remediate",
    ): "98920031827cde6f8341d0a4f584f05336d8ccc90ec77b5febd1f41d2f85ec38",
    (
        FileFormat.JSON,
        "remediate",
    ): "ff4294044de47090b6b20aee62b005f68d5a848b3f2c30a5a565ba58a6e91b40",
    (
        FileFormat.JSONL,
        "poller",
    ): "1f59a5ce81b9329db51501bc92b701c78cf79fe390785aa5cea0e348eefe8552",
    (FileFormat.JSON, "poller"): "86e8100e2988cdc93f4349906147eaeee35bfc1f71d989b04bb69d39df3639d8",
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", ["remediate", "poller"])
def test_rows_of_keys_of_their_own_are_written_as_before(
    tmp_path: Path, fmt: FileFormat, path: str
) -> None:
    data = _file(_rows(1000, 4, fmt), fmt)
    found = _polled(data, fmt) if path == "poller" else _remediated(tmp_path, data, fmt)
    assert _digest(found) == PINNED[(fmt, path)]


# --- how rows are cut into batches ---------------------------------------------------------


def _batches(data: bytes, fmt: FileFormat) -> list[Batch]:
    return list(batches(read_records(io.BytesIO(data), fmt)))


def _keys(batch: Batch) -> int:
    return len(batch.payload) + len(batch.extra)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_of_keys_of_their_own_are_cut_where_their_keys_pass_the_bound(
    fmt: FileFormat,
) -> None:
    """Before: cut by their cells alone (`MAX_BATCH_CELLS`), 1,000 rows of 5 keys of their own
    made batches of ~320 rows and ~1,600 mostly empty columns, each column worked on by every
    check and writer (20,000 such rows: 35 s and a 211 MB peak RSS through `meterfix
    remediate`)."""
    found = _batches(_file(_rows(1000, KEYS), fmt), fmt)
    assert sum(map(len, found)) == 1000
    assert max(map(_keys, found)) <= MAX_BATCH_KEYS
    # no more batches than the bound asks for (rows of ~7.5 keys; the JSON array's row with
    # an escape is read apart, one batch more)
    assert len(found) <= 2 + 1000 * (KEYS + 3) // MAX_BATCH_KEYS, [len(b) for b in found]


def _rows_of_own_keys_uncut() -> bool:
    """Rows of keys of their own are batched past `MAX_BATCH_KEYS` (it is off)."""
    found = _batches(_file(_rows(400, KEYS), FileFormat.JSONL), FileFormat.JSONL)
    return max(map(_keys, found)) > MAX_BATCH_KEYS


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_sharing_many_keys_are_cut_by_their_cells_alone(
    fmt: FileFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows naming the same 600 keys: past `MAX_BATCH_KEYS`, never four times the widest
    row's, so batched as without that bound (cut by their cells: ~870 rows), not a row each.
    (Their lines' bytes bound a batch too, `jsonlread.SLICE_BYTES`: lifted here, ~540 rows.)"""
    monkeypatch.setattr(jsonlread, "SLICE_BYTES", 1 << 30)
    shared = "".join(f'"dim{key}":{key},' for key in range(600))
    rows = [_row(row, 0).replace('"payload":{', '"payload":{' + shared) for row in range(1, 1201)]
    found = [len(batch) for batch in _batches(_file(rows, fmt), fmt)]
    assert sum(found) == 1200
    assert max(found) > 800, found
    monkeypatch.setattr(batchbounds, "MAX_BATCH_KEYS", 1 << 30)
    assert _rows_of_own_keys_uncut(), "the bound patched where it is read"
    assert [len(batch) for batch in _batches(_file(rows, fmt), fmt)] == found
