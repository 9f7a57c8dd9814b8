"""A run counts its rows by the code each arrived with (`summary["by_code"]`: the CLI's table,
the service's run record, alerts, digests and dashboard): Stripe's codes and ours by name
always, unknown codes by name up to `UNKNOWN_CODES_NAMED`, the rest (and codes of more than
`CODE_CHARS` characters) under `OTHER_CODES`; every row counted once, each row's own code
kept in its quarantine line and audit.

What happened: a file of a code a row (hostile, or a broken exporter) gave a summary of as
many codes as rows: 20,000 rows made the CLI draw a table of 20,000 lines (7.8 s of its
8.4 s), and the service would store, alert and chart every one."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from remediation.engine import remediate
from remediation.filetypes import FileFormat
from remediation.formats import read_records
from remediation.meters import Meter
from remediation.outcomes import CODE_CHARS, OTHER_CODES, UNKNOWN_CODES_NAMED
from remediation.rules import load_rules

NOW = 1_764_000_000


def _row(at: int, code: str, timestamp: int = NOW - 60) -> dict[str, Any]:
    return {
        "identifier": f"r{at}",
        "timestamp": timestamp,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": 1},
        "error": {"code": code, "message": "m"},
    }


def test_unknown_codes_past_the_first_are_counted_together(tmp_path: Path) -> None:
    unknown = UNKNOWN_CODES_NAMED + 150
    rows = [_row(at, f"new_code_{at}") for at in range(unknown)]
    rows.append(_row(unknown, "x" * (CODE_CHARS + 1)))
    rows.append(_row(unknown + 1, "timestamp_in_future", (NOW - 60) * 1000))  # known: named
    rows.append(_row(unknown + 2, "new_code_3"))  # named already: its own again
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    result = remediate(
        read_records(io.BytesIO(data), FileFormat.JSONL),
        source="failed.jsonl",
        fmt=FileFormat.JSONL,
        meters=[Meter("m1", "api_requests")],
        rules=load_rules(None),
        now=NOW,
        out_dir=tmp_path,
    )
    by_code = result.summary["by_code"]
    named = [f"new_code_{at}" for at in range(UNKNOWN_CODES_NAMED)]
    assert set(by_code) == {*named, "timestamp_in_future", OTHER_CODES}
    assert by_code["new_code_3"] == {"corrected": 0, "quarantined": 2}
    assert by_code["timestamp_in_future"] == {"corrected": 1, "quarantined": 0}
    assert by_code[OTHER_CODES] == {"corrected": 0, "quarantined": 151}
    counted = sum(slot["corrected"] + slot["quarantined"] for slot in by_code.values())
    assert counted == result.summary["corrected"] + result.summary["quarantined"] == len(rows)
    audit = (tmp_path / "failed.r1.audit.jsonl").read_text().splitlines()
    held = [json.loads(line) for line in audit if '"quarantine"' in line]
    long_code = "x" * (CODE_CHARS + 1)
    assert [entry["code"] for entry in held[-3:]] == [
        f"new_code_{unknown - 1}",
        long_code,
        "new_code_3",
    ]
    lines = (tmp_path / "failed.quarantine.r1.jsonl").read_text().splitlines()
    reasons = [json.loads(line)["mfx_reason"] for line in lines]
    assert (
        reasons[-1] == "unknown code 'new_code_3' and the row passes our validation (unclassified)"
    )
    assert reasons[-2].startswith("unknown code 'xxxx") and "(101 characters)" in reasons[-2]
