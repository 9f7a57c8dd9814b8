"""A run of a usage file (not rejected-only) holds its decided rows back in a temporary file
from its first row going out on (`core.heldback`): with no room for it, the error named the
input (`meterfix validate`: 'Error: <input>: File too large') or the outputs' folder
(`remediate`: '--out DIR: File too large', its outputs tiny). It names the temporary file."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

METERFIX = str(Path(sys.executable).with_name("meterfix"))
NOW = 1_764_000_000
METERS = [{"id": "mtr_1", "event_name": "api_requests", "status": "active"}]


def _usage(path: Path, rows: int) -> Path:
    """A usage file without error columns: its first row in milliseconds (corrected), then
    valid rows."""
    with path.open("w") as handle:
        handle.write("identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n")
        handle.write(f"k0,{(NOW - 60) * 1000},api_requests,cus_1,5\n")
        handle.writelines(f"v{i},{NOW - 60},api_requests,cus_1,{i % 97}\n" for i in range(rows))
    return path


def _limited() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails, no signal kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    meters = tmp_path / "meters.json"
    meters.write_text(json.dumps(METERS))
    return subprocess.run(
        [METERFIX, *args, "--meters", str(meters), "--now", str(NOW)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")},
        preexec_fn=_limited,
    )


def test_remediate_says_the_held_back_rows_found_no_room(tmp_path: Path) -> None:
    source = _usage(tmp_path / "big.csv", 40_000)
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()
    failed = _run(tmp_path, "remediate", str(source), "--out", str(out))
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (
        "Error: the rows held back until every row is decided (a temporary file in "
        f"{out}): File too large"
    ), failed.stderr
    assert list(out.iterdir()) == []  # nothing left behind


def test_validate_holds_nothing_back_and_counts_the_same(tmp_path: Path) -> None:
    """`validate` writes nothing: it held its rows back all the same (179 bytes a row in
    $TMPDIR), failing with no room. Now it counts them as they come and amends its counts:
    `k0` in milliseconds, corrected, shares its identifier with the last row, valid."""
    source = _usage(tmp_path / "big.csv", 40_000)
    with source.open("a") as handle:
        handle.write(f"k0,{NOW - 60},api_requests,cus_1,5\n")
    (tmp_path / "tmp").mkdir()
    checked = _run(tmp_path, "validate", str(source), "--json")
    assert checked.returncode == 1, checked.stderr  # rows to fix: quarantined
    summary = json.loads(checked.stdout)
    assert (summary["valid"], summary["corrected"], summary["quarantined"]) == (40_001, 0, 1)
    assert summary["by_code"] == {"timestamp_in_future": {"corrected": 0, "quarantined": 1}}
    assert list((tmp_path / "tmp").iterdir()) == []
