"""Batches are an implementation detail: any batch size writes the same bytes."""

from __future__ import annotations

import csv
import io
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from remediation import batching
from remediation.core import audit as audit_module
from remediation.engine import remediate
from remediation.readers import CsvRecords
from remediation.repair import plan_input, read_repaired
from tests.unit.remediation.test_csv_columns import HEADER, METERS, NOW, RULES, varied_rows
from tests.unit.remediation.test_jsonl_read import texts


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode())
    return path


def run_file(path: Path, out: Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    plan = plan_input(path, RULES)
    with open(path, "rb") as stream:
        result = remediate(
            read_repaired(stream, plan, RULES),
            source=path.name,
            fmt=plan.fmt,
            meters=METERS,
            rules=RULES,
            now=NOW,
            out_dir=out,
            columns=plan.columns,
            **kwargs,
        )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    return dict(result.summary, outputs=None), files


def compare(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> None:
    """Same bytes whether the rows come in one batch or in batches of 97."""
    single = run_file(path, tmp / "single", **kwargs)
    monkeypatch.setattr(batching, "BATCH_ROWS", 97)
    split = run_file(path, tmp / "split", **kwargs)
    assert split == single


@pytest.mark.parametrize("keep", [False, True])
def test_batches_write_what_one_batch_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(3000, 11))
    identifiers = "keep" if keep else "derive"
    compare(path, tmp_path, monkeypatch, identifiers=identifiers)


def test_parts_split_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(3000, 12))
    compare(path, tmp_path, monkeypatch, max_rows=700)


def test_quoted_newline_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = varied_rows(400, 13)
    rows[300][5] = "two\nlines"
    compare(write_csv(tmp_path / "in.csv", rows), tmp_path, monkeypatch)


def test_reroute_to_another_layout_across_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = varied_rows(400, 14)
    rows[350] = ["r", str(NOW), "tokens_v1", "cus_1", "4", "", "archived_meter", ""]
    compare(write_csv(tmp_path / "in.csv", rows), tmp_path, monkeypatch)


def test_blank_lines_and_crlf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(400, 15))
    data = path.read_bytes()
    path.write_bytes(data + b"\r\n\r\n" + data.split(b"\r\n", 1)[1])
    compare(path, tmp_path, monkeypatch)  # either way, the same bytes


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_lone_surrogate_quarantines_its_row_and_the_run_goes_on(
    tmp_path: Path, suffix: str
) -> None:
    """It failed the whole run (`UnicodeEncodeError` writing the outputs), in the CLI and in
    the service alike: now its row is quarantined as it was written, the others corrected."""
    rows = [
        '{"identifier": "a\\ud800", "timestamp": 1763999999123, "event_name": "api_requests", '
        '"payload": {"stripe_customer_id": "cus_1", "value": "1"}, "error_code": '
        '"timestamp_in_future"}',
        '{"identifier": "ok", "timestamp": 1763999999123, "event_name": "api_requests", '
        '"payload": {"stripe_customer_id": "cus_1", "value": "1"}, "error_code": '
        '"timestamp_in_future"}',
    ]
    text = "\n".join(rows) if suffix == ".jsonl" else "[" + ",".join(rows) + "]"
    path = tmp_path / f"failed{suffix}"
    path.write_text(text, encoding="ascii")
    summary, files = run_file(path, tmp_path / "out", rejected=True)
    assert (summary["corrected"], summary["quarantined"]) == (1, 1)
    corrected = next(v for k, v in files.items() if ".corrected." in k).decode("utf-8")
    assert '"ok-mfx1"' in corrected and "1763999999," in corrected
    quarantine = next(v for k, v in files.items() if ".quarantine." in k).decode("utf-8")
    assert "a\\\\ud800" in quarantine and "lone UTF-16 surrogate" in quarantine


def test_audit_lines_ordered_in_slices_are_the_lines_ordered_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's audit lines are put in row order a slice at a time (`AUDIT_SLICE_LINES`):
    slices of 7 lines write every output, the audit above all, as one slice does."""
    path = write_csv(tmp_path / "in.csv", varied_rows(3000, 17))
    whole = run_file(path, tmp_path / "whole")
    audit = next(name for name in whole[1] if name.endswith(".audit.jsonl"))
    entries = [json.loads(line) for line in whole[1][audit].splitlines()][:-1]  # no summary
    rows = [entry["row"] for entry in entries]
    assert len(rows) > 2 * 7 and rows == sorted(rows)  # many slices' worth, in row order
    kinds = [(entry["kind"], entry.get("rule")) for entry in entries]
    switches = sum(a != b for a, b in itertools.pairwise(kinds))
    assert switches > 10 * len(set(kinds))  # several changes' lines, interleaved by row
    monkeypatch.setattr(audit_module, "AUDIT_SLICE_LINES", 7)
    assert run_file(path, tmp_path / "sliced") == whole


def test_a_csv_read_ahead_on_a_thread_gives_the_batches_read_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine reads a CSV's next batch on its writer's thread (`csv_batches` with
    `ahead`): the same batches, in the same order, as read in place, blocks parsed by pyarrow
    and by csv.reader alike (a quoted line end sends its block to csv.reader)."""
    monkeypatch.setattr(batching, "BLOCK_BYTES", 2048)
    rows = varied_rows(900, 16)
    rows[500][5] = 'two\nlines, "quoted"'
    path = write_csv(tmp_path / "in.csv", rows)
    plan = plan_input(path, RULES)

    def read(ahead: Any) -> list[tuple[list[int], dict[str, Any]]]:
        with open(path, "rb") as stream:
            records = read_repaired(stream, plan, RULES)
            assert isinstance(records, CsvRecords)
            found = batching.csv_batches(records, 128, ahead)
            return [(batch.rows.tolist(), texts(batch)) for batch in found]

    with ThreadPoolExecutor(1, "test-ahead") as pool:
        threaded = read(pool.submit)
    in_place = read(None)
    assert threaded == in_place
    assert len(in_place) > 20 and sum(len(r) for r, _ in in_place) == 900
    assert all(len(r) <= 128 for r, _ in in_place)
