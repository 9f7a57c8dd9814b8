"""A quarantine file fed back to `meterfix remediate`: a row quarantined because Stripe took an
event under its identifier (`identifier_taken`: the usage file's valid `k1` beside `k1` in
milliseconds) was validated again, our `mfx_` notes unread, and corrected to `k1-mfx1`: billed
twice. Its `mfx_code` keeps it quarantined (and `sent_without_answer`'s the same)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

METERFIX = str(Path(sys.executable).with_name("meterfix"))
NOW = 1_764_000_000
METERS = [{"id": "mtr_1", "event_name": "api_requests", "status": "active"}]
ROWS = [("k1", NOW - 60), ("k1", (NOW - 60) * 1000), ("t1", (NOW - 60) * 1000)]


def _input(path: Path, fmt: str) -> Path:
    if fmt == "csv":
        lines = ["identifier,timestamp,event_name,payload_stripe_customer_id,payload_value"]
        lines += [f"{i},{t},api_requests,cus_1,5" for i, t in ROWS]
    else:
        lines = [
            json.dumps(
                {
                    "identifier": i,
                    "timestamp": t,
                    "event_name": "api_requests",
                    "payload": {"stripe_customer_id": "cus_1", "value": "5"},
                }
            )
            for i, t in ROWS
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _remediate(tmp_path: Path, source: Path, out: Path) -> dict[str, object]:
    meters = tmp_path / "meters.json"
    meters.write_text(json.dumps(METERS))
    proc = subprocess.run(
        [
            METERFIX,
            "remediate",
            str(source),
            "--out",
            str(out),
            "--meters",
            str(meters),
            "--now",
            str(NOW),
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    summary: dict[str, object] = json.loads(proc.stdout)
    return summary


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_row_quarantined_identifier_taken_fed_back_is_not_corrected(
    tmp_path: Path, fmt: str
) -> None:
    first = _remediate(tmp_path, _input(tmp_path / f"day.{fmt}", fmt), tmp_path / "o1")
    assert (first["valid"], first["corrected"], first["quarantined"]) == (1, 1, 1)
    fed = tmp_path / f"again.{fmt}"
    fed.write_bytes((tmp_path / "o1" / f"day.quarantine.r1.{fmt}").read_bytes())
    again = _remediate(tmp_path, fed, tmp_path / "o2")
    assert (again["valid"], again["corrected"], again["quarantined"]) == (0, 0, 1)
    assert not (tmp_path / "o2" / f"again.corrected.r1.{fmt}").exists()
    held = (tmp_path / "o2" / f"again.quarantine.r1.{fmt}").read_text()
    assert "identifier_taken" in held and "k1-mfx1" not in held
