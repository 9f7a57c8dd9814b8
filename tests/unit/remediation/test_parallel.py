"""Two processes over two byte ranges write exactly what one pass writes."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediation import parallel, ranges
from remediation.engine import remediate
from remediation.repair import plan_input, read_repaired
from tests.unit.remediation.test_fastpath import HEADER, METERS, NOW, RULES, varied_rows


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


def compare(path: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> bool:
    """Same bytes with and without halves; True when the halves were used."""
    used = []
    halves = parallel.remediate_halves

    def spying(*args: Any) -> bool:
        used.append(halves(*args))
        return used[-1]

    monkeypatch.setattr(parallel, "MIN_ROWS", 10**9)
    single = run_file(path, tmp / "single", **kwargs)
    monkeypatch.setattr(parallel, "MIN_ROWS", 10)
    monkeypatch.setattr(parallel, "remediate_halves", spying)
    split = run_file(path, tmp / "split", **kwargs)
    assert split == single
    return used == [True]


@pytest.mark.parametrize("keep", [False, True])
def test_halves_write_what_one_pass_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(3000, 11))
    identifiers = "keep" if keep else "derive"
    assert compare(path, tmp_path, monkeypatch, identifiers=identifiers)


def test_parts_split_across_the_halves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(3000, 12))
    assert compare(path, tmp_path, monkeypatch, max_rows=700)


def test_quoted_newline_falls_back_to_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = varied_rows(400, 13)
    rows[300][5] = "two\nlines"
    assert not compare(write_csv(tmp_path / "in.csv", rows), tmp_path, monkeypatch)


def test_reroute_to_another_layout_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = varied_rows(400, 14)
    rows[350] = ["r", str(NOW), "tokens_v1", "cus_1", "4", "", "archived_meter", ""]
    assert not compare(write_csv(tmp_path / "in.csv", rows), tmp_path, monkeypatch)


def test_blank_lines_and_crlf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_csv(tmp_path / "in.csv", varied_rows(400, 15))
    data = path.read_bytes()
    path.write_bytes(data + b"\r\n\r\n" + data.split(b"\r\n", 1)[1])
    compare(path, tmp_path, monkeypatch)  # either way, the same bytes


@settings(max_examples=400)
@given(text=st.text(alphabet='ab,"\r\n ', max_size=40))
def test_block_rows_read_what_csv_reader_reads(text: str) -> None:
    """Whole lines (a block ends at a newline) give csv.reader's rows, or SplitUnsafe."""
    text = text + "\n" if text and not text.endswith("\n") else text
    expected = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    try:
        rows = ranges.block_rows(text, ",")
    except ranges.SplitUnsafe:
        return
    assert rows == expected


def test_an_open_quote_at_the_end_of_a_range_is_unsafe() -> None:
    with pytest.raises(ranges.SplitUnsafe):
        ranges.block_rows('a,b\r\nc,"d\r\n', ",")
