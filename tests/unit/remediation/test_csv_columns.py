"""A CSV read as columns and written as bytes gives exactly what its records give, read and
written one record at a time (the row API: the same core on batches built from records)."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediation.csvlayouts import CsvLayout
from remediation.engine import remediate
from remediation.formats import FileFormat, read_records
from remediation.identifiers import Ancestor, Lineage
from remediation.meters import Meter
from remediation.outcomes import corrections_of
from remediation.readers import CsvRecords
from remediation.repair import plan_input, read_repaired
from remediation.rules import load_rules

NOW = 1_764_000_000
METERS = [
    Meter("m1", "api_requests"),
    Meter("m2", "tokens_v1", status="inactive"),
    Meter("m3", "tokens", value_key="tokens"),
]
RULES = load_rules(
    '[customers]\n"acme-42" = "cus_Q1"\n" cus_2 " = "cus_2"\n'
    '[meter_successors]\n"tokens_v1" = "tokens"\n'
    '[event_names]\n"api-call" = "api_requests"\n'
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
    st.sampled_from(
        ["a1", "", "x-r2", "b-r0", "q,uote", 'd"q', "ü{}", "evt-1", "run-red", "a1-mfx1", "L" * 97]
    ),
    st.sampled_from(
        [
            str(NOW),
            str(NOW - 60),
            "²",
            " " + str(NOW),
            str(NOW + 1000) + "000",
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
    st.sampled_from(
        [
            "api_requests",
            "API-Requests",
            "api-call",
            "tokens",
            "tokens_v1",
            "api_requestz",
            "nope",
            "",
        ]
    ),
    st.sampled_from(["cus_1", "", " cus_2 ", "acme-42", "a,b"]),
    st.sampled_from(
        ["5", "12.0", "1,234", "0,001", "1,234.50", "NaN", "", "abc", "1.5", "²", "1.1234567890123"]
    ),
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
            " No_Meter ",
            "\u00a0no_meter\u00a0",  # str.strip() strips a no-break space, Arrow's ASCII trim not
            "Nö_Meter",
            "unclassified",
            "timestamp_invalid",
        ]
    ),
    st.sampled_from(
        ["", "No meter was found matching event_name X.", "  No customer.\t", "Kein Zähler. "]
    ),
]
ROWS = st.lists(st.tuples(*CELLS).map(list), min_size=1, max_size=60)
# `x-r2` and `b-r0` were written by us (lineage), `a1-mfx1` is also an original of the input
LINEAGE = Lineage(
    {"x-r2": Ancestor("x", "no_meter", 1), "b-r0": Ancestor("b", "timestamp_in_future", 1)},
    frozenset({"a1-mfx1"}),
)


def to_csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def run(
    data: bytes, out: Path, columns: bool, **kwargs: Any
) -> tuple[dict[str, Any], dict[str, bytes], list[dict[str, Any]]]:
    records = read_records(io.BytesIO(data), FileFormat.CSV)
    entries: list[Any] = []
    result = remediate(
        records if columns else list(records),
        source="failed.csv",
        fmt=FileFormat.CSV,
        meters=METERS,
        rules=RULES,
        now=NOW,
        out_dir=out,
        columns=CsvLayout.from_header(HEADER).columns(),
        on_audit=lambda done, held: entries.extend([*corrections_of(done), *held]),
        **kwargs,
    )
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    summary = dict(result.summary, outputs=None)
    return (
        summary,
        files,
        sorted(entries, key=lambda entry: entry[1]),
    )  # stable: row order (both kinds' 2nd field)


def assert_same(data: bytes, tmp: Path, **kwargs: Any) -> None:
    general = run(data, tmp / "general", False, **kwargs)
    as_columns = run(data, tmp / "columns", True, **kwargs)
    assert as_columns == general


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, keep=st.booleans(), rejected=st.booleans(), lineage=st.booleans())
def test_columns_write_what_records_write(
    rows: list[list[str]], keep: bool, rejected: bool, lineage: bool, tmp_path_factory: Any
) -> None:
    doubled = rows + [list(row) for row in rows]
    tmp = tmp_path_factory.mktemp("cmp")
    identifiers = "keep" if keep else "derive"
    more = {"lineage": LINEAGE} if lineage else {}
    assert_same(to_csv(doubled), tmp, identifiers=identifiers, rejected=rejected, **more)


def test_a_renamed_key_goes_last_in_its_own_row(tmp_path: Path) -> None:
    """Found by the property above: a row whose value key a rule renames (`value` ->
    `tokens`) keeps its own key order, as the row API keeps it, whatever key order another
    row of its batch has (the row before it lacks the customer key): the corrected file's
    columns were `payload_tokens,payload_stripe_customer_id` on columns."""
    message = "No meter was found matching event_name X."
    rows = [
        ["a1", str(NOW), "api_requests", "cus_1", "5", "", "", ""],
        ["a2", str(NOW), "tokens", "", "5", "", "", message],
        ["a3", str(NOW), "tokens", "cus_1", "5", "", "", message],
    ]
    assert_same(to_csv(rows), tmp_path, rejected=False)
    written = (tmp_path / "columns" / "failed.corrected.r1.csv").read_bytes().splitlines()
    assert written[0].decode().split(",")[3:5] == ["payload_stripe_customer_id", "payload_tokens"]


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


def varied_rows(count: int, seed: int) -> list[list[str]]:
    """Rows that differ in every cell, as real failed-records files do."""
    rng = random.Random(seed)
    kinds: list[tuple[str, Callable[[], str]]] = [
        (
            "timestamp_in_future",
            lambda: str((NOW - rng.randrange(86400)) * 1000 + rng.randrange(999)),
        ),
        ("timestamp_in_future", lambda: str(NOW + 301 + rng.randrange(4000))),
        ("meter_event_invalid_value", lambda: f"{rng.randrange(1, 999)},{rng.randrange(1000):03d}"),
        ("no_meter", lambda: "API-Requests"),
        ("meter_event_customer_not_found", lambda: "acme-42"),
        ("", lambda: str(NOW - rng.randrange(86400))),
    ]
    rows = []
    for i in range(count):
        code, make = rng.choice(kinds)
        cells = [f"{rng.getrandbits(64):016x}", str(NOW - rng.randrange(86400)), "api_requests"]
        cells += [f"cus_{rng.randrange(10**6)}", str(rng.randrange(1, 10**6)), "", code, ""]
        at = {"timestamp_in_future": 1, "no_meter": 2, "meter_event_customer_not_found": 3}
        cells[at.get(code, 4 if code else 1)] = make()
        if i % 97 == 0:
            cells[0] += "-r1"  # ours per `ours()`: lineage says we wrote it
        rows.append(cells)
    return rows


def ours(rows: list[list[str]]) -> Lineage:
    """Lineage saying we wrote the `-r1` rows of `varied_rows` (in generation 1)."""
    return Lineage({r[0]: Ancestor(r[0][:-3], None, 1) for r in rows if r[0].endswith("-r1")})


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("rejected", [False, True])
def test_varied_rows(tmp_path: Path, keep: bool, rejected: bool) -> None:
    rows = varied_rows(3000, 5)
    identifiers = "keep" if keep else "derive"
    assert_same(
        to_csv(rows), tmp_path, identifiers=identifiers, rejected=rejected, lineage=ours(rows)
    )


def test_reroute_to_another_layout_between_column_rows(tmp_path: Path) -> None:
    rows = varied_rows(200, 6)
    rows[50] = ["r50", str(NOW), "tokens_v1", "cus_1", "4", "", "archived_meter", ""]
    assert_same(to_csv(rows), tmp_path, max_rows=64)


def test_superscript_timestamp_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    rows = [["e1", "²", "api_requests", "cus_1", "5", "", "timestamp_in_future", ""]]
    rows += [["e2", "²", "api_requests", "cus_1", "5", "", "", ""]]
    assert_same(to_csv(rows), tmp_path)
    summary, _, _ = run(to_csv(rows), tmp_path / "again", True)
    assert (summary["quarantined"], summary["by_code"]) == (
        2,
        {
            "timestamp_in_future": {"corrected": 0, "quarantined": 1},
            "timestamp_invalid": {"corrected": 0, "quarantined": 1},
        },
    )


@pytest.mark.parametrize("name", ["failed.csv", "semicolon.csv", "usage.csv"])
def test_identifiers_read_as_a_column_are_the_records_identifiers(name: str) -> None:
    """The lineage pass reads the identifier column alone; it must see what the records say,
    malformed rows and rows without an identifier included."""
    path = Path(__file__).parents[2] / "data" / "corpus" / name
    plan = plan_input(path, RULES)
    with open(path, "rb") as stream:
        records = read_repaired(stream, plan, RULES)
        assert isinstance(records, CsvRecords)
        expected = [(r.identifier, r.row_number) for r in records]
    with open(path, "rb") as stream:
        records = read_repaired(stream, plan, RULES)
        assert isinstance(records, CsvRecords)
        assert list(records.identifiers()) == expected
    assert len(expected) >= 3
