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

from sandbox.defaults import SANDBOX_API_KEY, SANDBOX_WEBHOOK_SECRET, sandbox_bases
from tests.servers import free_port

METERFIX = str(Path(sys.executable).with_name("meterfix"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADMIN_TOKEN = "walkthrough-admin-token"


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
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str]]:
    sandbox_port, web_port = free_port(), free_port()
    sandbox = f"http://127.0.0.1:{sandbox_port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'meterfix.db'}",
        "BUCKET_URL": f"file://{tmp_path / 'bucket'}",
        "STRIPE_API_KEY": SANDBOX_API_KEY,
        "STRIPE_WEBHOOK_SECRETS": SANDBOX_WEBHOOK_SECRET,
        "STRIPE_API_BASE": sandbox_bases(sandbox)["api"],
        "STRIPE_FILES_BASE": sandbox_bases(sandbox)["files"],
        "STRIPE_METER_EVENTS_BASE": sandbox_bases(sandbox)["meter_events"],
        "MFX_RULES": str(EXAMPLES / "rules.toml"),
        "MFX_POLLER": "on",
        "MFX_POLL_INTERVAL": "1",
        "MFX_WORKER_INTERVAL": "0.2",
        "MFX_WORK_DIR": str(tmp_path / "work"),
        "MFX_ADMIN_TOKEN": ADMIN_TOKEN,
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
        yield env, sandbox, f"http://127.0.0.1:{web_port}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_demo_file_fixes_itself(stack: tuple[dict[str, str], str, str], tmp_path: Path) -> None:
    env, sandbox, web = stack
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

    _dashboard_shows_the_demo(web, prefix)


def _dashboard_shows_the_demo(web: str, prefix: str) -> None:
    """What the README promises after `meterfix demo`: the run, its corrected and quarantined
    rows with reasons, and its alert, on the admin API and the dashboard pages."""
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    rows = api.get(f"{web}/api/quarantine", timeout=10).json()["data"]
    by_id = {row["identifier"]: row for row in rows}
    assert by_id[f"{prefix}-6"]["code"] == "meter_event_invalid_value"
    assert "is not a number" in by_id[f"{prefix}-6"]["reason"]
    assert by_id[f"{prefix}-7"]["code"] == "timestamp_too_far_in_past"
    run_id = by_id[f"{prefix}-6"]["run_id"]
    run = api.get(f"{web}/api/runs/{run_id}", timeout=10).json()
    assert run["corrected"] == 3 and run["quarantined"] == 2
    keys = [output["key"] for output in run["outputs"]]
    assert any("/corrected/" in f"/{key}" and key.endswith(".csv") for key in keys), keys
    assert any("/quarantine/" in f"/{key}" for key in keys), keys
    alerts = api.get(f"{web}/api/alerts", timeout=10).json()["data"]
    assert any(alert["links"].get("run") == run_id for alert in alerts), alerts
    browser = requests.Session()
    login = browser.get(f"{web}/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf is not None
    form = {"token": ADMIN_TOKEN, "csrf_token": csrf[1]}
    assert browser.post(f"{web}/login", data=form, timeout=10).status_code == 200
    page = browser.get(f"{web}/runs/{run_id}", timeout=10).text
    assert all(key in page for key in keys)
    quarantine = browser.get(f"{web}/quarantine?run={run_id}", timeout=10).text
    assert f"{prefix}-6" in quarantine and f"{prefix}-7" in quarantine
