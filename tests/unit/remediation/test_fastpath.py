"""The CSV fast path (row templates) writes exactly what the record-by-record path writes."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.meters import Meter
from remediation.readers import CsvLayout
from remediation.rules import load_rules

NOW = 1_764_000_000
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "tokens_v1", status="inactive"),
    Meter("m3", "tokens", value_key="tokens"),
]
RULES = load_rules(
    '[customers]\n"acme-42" = "cus_Q1"\n[meter_successors]\n"tokens_v1" = "tokens"\n'
)
HEADER = [
    "identifier",
    "timestamp",
    "event_name",
    "payload_stripe_customer_id",
    "payload_value",
    "note",
    "error_code",
    "error_message",
]
CELLS = [
    st.sampled_from(["a1", "", "x-r2", "b-r0", "q,uote", 'd"q', "ü{}", "evt-1", "run-red"]),
    st.sampled_from(
        [
            str(NOW),
            str(NOW - 60),
            str(NOW * 1000 + 5),
            str(NOW * 10**6),
            str(NOW + 1000),
            str(NOW + 100),
            "0" + str(NOW),
            str(NOW - 40 * 86400),
            "",
            "2025-11-24T16:00:00Z",
            "x",
        ]
    ),
    st.sampled_from(["api_requests", "API-Requests", "tokens", "tokens_v1", "nope", ""]),
    st.sampled_from(["cus_1", "", " cus_2 ", "acme-42", "a,b"]),
    st.sampled_from(["5", "12.0", "1,234", "NaN", "", "abc", "1.5", str(NOW)]),
    st.sampled_from(["", "n", "c,d"]),
    st.sampled_from(
        [
            "",
            "timestamp_in_future",
            "meter_event_invalid_value",
            "no_meter",
            "archived_meter",
            "meter_event_customer_not_found",
            "timestamp_too_far_in_past",
            "odd_code",
        ]
    ),
    st.sampled_from(["", "No meter was found matching event_name X."]),
]
ROWS = st.lists(st.tuples(*CELLS).map(list), min_size=1, max_size=60)


def to_csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def run(
    data: bytes, out: Path, fast: bool, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, bytes]]:
    records = read_records(io.BytesIO(data), FileFormat.CSV)
    result = remediate(
        records if fast else list(records),
        source="failed.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=CsvLayout.from_header(HEADER).columns(),
        **kwargs,
    )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    summary = dict(result.summary, outputs=None)
    return summary, files


def assert_same(data: bytes, tmp: Path, **kwargs: Any) -> None:
    general = run(data, tmp / "general", False, **kwargs)
    fast = run(data, tmp / "fast", True, **kwargs)
    assert fast == general


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, keep=st.booleans())
def test_fast_path_writes_what_the_general_path_writes(
    rows: list[list[str]], keep: bool, tmp_path_factory: Any
) -> None:
    doubled = rows + [list(row) for row in rows]  # repeated rows are written from templates
    tmp = tmp_path_factory.mktemp("cmp")
    assert_same(to_csv(doubled), tmp, identifiers="keep" if keep else "derive")


def test_parts_split_at_the_same_rows(tmp_path: Path) -> None:
    rows = [
        [f"e{i}", str(NOW * 1000 + i), "api_requests", "cus_1", "5", "", "timestamp_in_future", ""]
        for i in range(2500)
    ]
    assert_same(to_csv(rows), tmp_path, max_rows=1000)


def test_first_row_outside_the_columns_falls_back(tmp_path: Path) -> None:
    rows = [["e0", str(NOW), "tokens_v1", "cus_1", "4", "", "archived_meter", ""]]
    rows += [[f"e{i}", str(NOW), "api_requests", "cus_1", "5", "", "", ""] for i in range(1, 50)]
    assert_same(to_csv(rows), tmp_path)


def test_blank_lines_and_short_rows(tmp_path: Path) -> None:
    data = to_csv([["e1", str(NOW), "api_requests", "cus_1", "5", "", "", ""]])
    data += (
        b"\r\n"
        + b"e2,"
        + str(NOW).encode()
        + b"\r\ne3,"
        + str(NOW).encode()
        + b",api_requests,cus_1,5,,,\r\n"
    )
    assert_same(data, tmp_path)
