"""`identifiers_in` reads a CSV's identifier column alone: the same identifiers as the file's
records, for every shape the repairs read (the whole-file repair's `;`, quoted cells, rows
without an identifier), and a JSON Lines file's from its records."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediation.repair import plan_input, read_repaired
from remediation.rules import Rules
from service.jobs.inputs import identifiers_in

HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
ROWS = (
    'a1,1796400000,api_requests,cus_1,5\n"b,2",1796400000,api_requests,cus_1,"1,234"\n'
    ",1796400000,api_requests,cus_1,3\n  c3 ,1796400000,api_requests,cus_1,4\n"
    '"d""4",1796400000,api_requests,cus_1,6\n'
)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("a.csv", HEADER + ROWS),
        ("semi.csv", (HEADER + ROWS.replace('"1,234"', "1234")).replace(",", ";")),
        (
            "a.jsonl",
            '{"identifier": "a1", "timestamp": 1796400000, "event_name": "api_requests", '
            '"payload": {"stripe_customer_id": "cus_1", "value": 5}}\n'
            '{"timestamp": 1796400000, "event_name": "api_requests", '
            '"payload": {"stripe_customer_id": "cus_1", "value": 5}}\n',
        ),
    ],
)
def test_the_identifiers_of_a_file_are_those_of_its_records(
    tmp_path: Path, name: str, body: str
) -> None:
    path = tmp_path / name
    path.write_text(body)
    rules = Rules()
    with path.open("rb") as stream:
        expected = {r.identifier for r in read_repaired(stream, plan_input(path, rules), rules)}
    expected.discard(None)
    assert identifiers_in(path, rules) == expected
    assert expected  # the file has identified rows
    if name == "a.csv":
        assert expected == {"a1", "b,2", "  c3 ", 'd"4'}
