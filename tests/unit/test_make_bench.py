"""`make bench` runs every script in bench/ that prints figures (each one with a `__main__`;
the others are helpers they import): `bench/service_path.py`, the service path's figures the
README gives, was left out. Read from `make -n bench`, which prints the commands it would run
and runs none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_bench_runs_every_bench_script() -> None:
    scripts = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "bench").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text("utf-8")
    )
    assert "bench/service_path.py" in scripts
    planned = subprocess.run(
        ["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    ran = sorted(set(re.findall(r"python (bench/\w+\.py)", planned)))
    assert ran == scripts, planned


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_bench_never_echoes_the_benchs_database_url() -> None:
    """With MFX_BENCH_DATABASE_URL set, `make bench` runs the service path on PostgreSQL too,
    without writing the URL (and any password in it) into the command make echoes (before: it
    was passed as `--database-url '<url>'`); the script reads the variable itself."""
    url = "postgresql+psycopg://bench:s3cret-pw@127.0.0.1:5432/bench"
    planned = subprocess.run(
        ["make", "-n", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "MFX_BENCH_DATABASE_URL": url},
    ).stdout
    service_path = [line for line in planned.splitlines() if "bench/service_path.py" in line]
    assert len(service_path) == 2, planned  # SQLite, then the URL's database
    assert "s3cret-pw" not in planned, planned
