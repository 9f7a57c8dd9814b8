"""The paths `remediate` prints are the paths it wrote, so they can be copied: a folder
`می‌خواهم` (Persian, a zero-width non-joiner inside the word) or a file `usage-❤️.csv` (the
heart's variation selector) was printed `می[U+200C]خواهم` and `usage-❤[U+FE0F].csv` in its
`corrected:`, `quarantine:` and `audit:` lines, a path no shell finds. A zero-width space is
still written as its code point (the line is then not the path, but never looks like
another). The real console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MFX = str(Path(sys.executable).with_name("meterfix"))
DATA = Path(__file__).parent.parent / "data" / "usage"


def _remediate(source: Path, out: Path) -> list[str]:
    args = [MFX, "remediate", str(source), "--out", str(out), "--now", "1764000000"]
    args += ["--meters", str(DATA / "meters.json"), "--rules", str(DATA / "rules.toml")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent), "COLUMNS": "80"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "usage-\u2764\ufe0f.csv"),
        ("\u0915\u094d\u200d\u0937", "\U0001f468\u200d\U0001f469\u200d\U0001f467.csv"),
    ],
)
def test_remediate_prints_a_path_of_joiners_and_selectors_as_it_is(
    tmp_path: Path, folder: str, name: str
) -> None:
    out = tmp_path / folder
    source = tmp_path / name
    source.write_bytes((DATA / "failed_records.csv").read_bytes())
    lines = _remediate(source, out)
    printed = [
        line.split(": ", 1)[1]
        for line in lines
        if line.startswith(("corrected:", "quarantine:", "audit:"))
    ]
    assert len(printed) >= 3, lines
    assert all(Path(path).is_file() and Path(path).parent == out for path in printed), printed


def test_remediate_writes_a_zero_width_space_in_a_path_as_its_code_point(tmp_path: Path) -> None:
    out = tmp_path / "out\u200b"
    source = tmp_path / "usage.csv"
    source.write_bytes((DATA / "failed_records.csv").read_bytes())
    lines = _remediate(source, out)
    audit = [line for line in lines if line.startswith("audit:")]
    assert audit == [f"audit: {tmp_path}/out[U+200B]/{next(out.glob('*audit*')).name}"]
