"""The README walkthrough as a new user runs it: sandbox, web and worker as real processes
(what `make run` starts), then `meterfix demo` drops a messy file into the bucket."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET
from tests.servers import free_port

METERFIX = str(Path(sys.executable).with_name("meterfix"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _wait(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'meterfix.db'}",
        "BUCKET_URL": f"file://{tmp_path / 'bucket'}",
        "STRIPE_API_KEY": SANDBOX_API_KEY,
        "STRIPE_WEBHOOK_SECRETS": SANDBOX_WEBHOOK_SECRET,
        "STRIPE_API_BASE": sandbox,
        "STRIPE_FILES_BASE": sandbox,
        "STRIPE_METER_EVENTS_BASE": sandbox,
        "MFX_RULES": str(EXAMPLES / "rules.toml"),
        "MFX_POLLER": "on",
        "MFX_POLL_INTERVAL": "1",
        "MFX_WORKER_INTERVAL": "0.2",
        "MFX_WORK_DIR": str(tmp_path / "work"),
    }
    (tmp_path / "bucket").mkdir()
    subprocess.run([METERFIX, "db", "upgrade"], env=env, cwd=tmp_path, check=True, timeout=60)
    commands = [
        ["sandbox", "--port", str(sandbox_port), "--report-interval", "1",
         "--webhook-url", f"http://127.0.0.1:{web_port}/webhooks"],
        ["serve", "--port", str(web_port)],
        ["worker"],
    ]  # fmt: skip
    procs = [
        subprocess.Popen([METERFIX, *args], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
        for args in commands
    ]
    try:
        _wait(f"{sandbox}/_sandbox/meter_events")
        _wait(f"http://127.0.0.1:{web_port}/healthz")
        yield env, sandbox
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_demo_file_fixes_itself(stack: tuple[dict[str, str], str], tmp_path: Path) -> None:
    env, sandbox = stack
    demo = subprocess.run(
        [METERFIX, "demo"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 0, demo.stderr
    tag = re.search(r"demo-(\d+)\.csv", demo.stdout)
    assert tag is not None, demo.stdout
    prefix = f"demo{tag[1]}"
    expected = {f"{prefix}-{n}" for n in ("1", "8", "2-mfx1", "3-mfx1", "4-mfx1", "5-mfx1")}
    accepted: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and accepted != expected:
        time.sleep(0.5)
        events = requests.get(f"{sandbox}/_sandbox/meter_events", timeout=5).json()
        accepted = {str(e["identifier"]) for e in events}
    assert accepted == expected
    quarantine = "".join(
        p.read_text() for p in (tmp_path / "bucket" / "quarantine").rglob("*.quarantine.*.csv")
    )
    assert f"{prefix}-6" in quarantine and "is not a number" in quarantine
    assert f"{prefix}-7" in quarantine and "timestamp_too_far_in_past" in quarantine
    time.sleep(3)  # a few more passes: nothing is sent twice
    events = requests.get(f"{sandbox}/_sandbox/meter_events", timeout=5).json()
    assert sorted(str(e["identifier"]) for e in events) == sorted(expected)
