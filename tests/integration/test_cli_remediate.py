"""`meterfix validate` / `meterfix remediate` through the real console script."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data" / "usage"
METERFIX = str(Path(sys.executable).with_name("meterfix"))
NOW = "1764000000"


def meterfix(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [METERFIX, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def common(*extra: str) -> list[str]:
    return [
        "--meters",
        str(DATA / "meters.json"),
        "--rules",
        str(DATA / "rules.toml"),
        "--now",
        NOW,
        *extra,
    ]


def test_remediate_csv_writes_rows_and_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = meterfix(
        "remediate",
        str(DATA / "failed_records.csv"),
        "--out",
        str(out),
        *common("--json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (
        summary["input_rows"],
        summary["valid"],
        summary["corrected"],
        summary["quarantined"],
    ) == (7, 1, 5, 1)
    assert summary["by_code"]["meter_event_invalid_value"] == {"corrected": 1, "quarantined": 1}
    corrected = [p for p in summary["outputs"]["corrected"]]
    assert all(Path(p).is_absolute() for p in corrected)
    with open(corrected[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["identifier"] for r in rows] == [f"r{n}-mfx1" for n in (1, 2, 3, 5, 7)]
    assert rows[0]["timestamp"] == NOW and rows[1]["payload_value"] == "1234"
    assert rows[2]["event_name"] == "api_requests"
    assert rows[3]["payload_stripe_customer_id"] == "cus_Q1a2B3c4"
    assert "error_code" not in rows[0]
    with open(summary["outputs"]["quarantine"][0], newline="") as handle:
        (quarantined,) = list(csv.DictReader(handle))
    assert (
        quarantined["identifier"] == "r4" and quarantined["mfx_code"] == "meter_event_invalid_value"
    )
    audit = Path(summary["outputs"]["audit"]).read_text().splitlines()
    assert any(json.loads(line).get("rule") == "successor_meter" for line in audit)
    again = meterfix(
        "remediate",
        str(DATA / "failed_records.csv"),
        "--out",
        str(tmp_path / "o2"),
        *common("--json"),
        cwd=tmp_path,
    )
    second = json.loads(again.stdout)
    for kind in ("corrected", "quarantine"):
        for a, b in zip(summary["outputs"][kind], second["outputs"][kind], strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes()


def test_remediate_jsonl_keeps_format(tmp_path: Path) -> None:
    proc = meterfix(
        "remediate",
        str(DATA / "failed_records.jsonl"),
        "--out",
        str(tmp_path),
        *common("--json", "--identifiers", "keep"),
        cwd=tmp_path,
    )
    summary = json.loads(proc.stdout)
    (path,) = summary["outputs"]["corrected"]
    assert path.endswith(".corrected.r1.jsonl")
    (row,) = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert row == {
        "identifier": "j1",
        "timestamp": 1764000000,
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": 5},
    }


def test_validate_counts_and_exit_code(tmp_path: Path) -> None:
    proc = meterfix("validate", str(DATA / "failed_records.csv"), *common("--json"), cwd=tmp_path)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["valid"] == 1 and summary["outputs"]["corrected"] == []
    assert list(tmp_path.iterdir()) == [] or all(p.name != "out" for p in tmp_path.iterdir())
    good = tmp_path / "good.csv"
    good.write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        "a,1764000000,api_requests,cus_1,3\n"
    )
    ok = meterfix("validate", str(good), *common(), cwd=tmp_path)
    assert ok.returncode == 0 and "valid 1" in ok.stdout


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, (), "no such file"),
        (b"identifier,timestamp\nx,caf\xe9\n", (), "not UTF-8"),
        (b"", (), "empty file"),
        (b"a,b\n1,2\n", ("--rules", "BADRULES"), "bad rules"),
        (b"a,b\n1,2\n", ("--meters", "BADMETERS"), "cannot read meters"),
    ],
)
def test_bad_input_is_one_line_without_traceback(
    tmp_path: Path, content: bytes | None, extra: tuple[str, ...], message: str
) -> None:
    target = tmp_path / "in.csv"
    if content is not None:
        target.write_bytes(content)
    (tmp_path / "bad.toml").write_text("[policy]\nfuture_skew_seconds = 'x'\n")
    (tmp_path / "bad.json").write_text("{not json")
    args = [
        a.replace("BADRULES", str(tmp_path / "bad.toml")).replace(
            "BADMETERS", str(tmp_path / "bad.json")
        )
        for a in extra
    ]
    base = common()
    if args:
        flag = args[0]
        base = [*base[: base.index(flag)], *base[base.index(flag) + 2 :], *args]
    proc = meterfix("remediate", str(target), "--out", str(tmp_path / "o"), *base, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
