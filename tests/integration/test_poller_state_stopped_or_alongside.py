"""The poller's state on /api/health and the overview card, with the real console script.

A `meterfix poll` stopped by SIGTERM ends with the beat `{"doing": "stopped"}`: only
"exited" was read as not running, so /api/health said `running` and the card "1 s ago",
plain, until MFX_HEARTBEAT_SILENCE passed. And a `poll --once` that ended while another
poller ran hid it: only the newest beat of the role was judged, so /api/health said `exited`
and the card "not running". Failed before: 'running' == 'stopped'; 'exited' == 'running'."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from service.models._types import table_of
from service.models.health import Heartbeat
from tests.integration.test_web_api import TOKEN, Api, api  # noqa: F401 (fixture)

MFX = str(Path(sys.executable).with_name("meterfix"))
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def _env(db_url: str, **extra: str) -> dict[str, str]:
    prefixes = ("STRIPE_", "MFX_", "LOG_", "DATABASE_URL", "BUCKET_URL", "S3_", "FLASK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return (
        env
        | {
            "LOG_FORMAT": "json",
            "DATABASE_URL": db_url,
            "BUCKET_URL": "file://./bucket",
            "MFX_POLLER": "index",
            "MFX_WORK_DIR": "./work",
        }
        | extra
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "bucket").mkdir(exist_ok=True)
    (tmp_path / "bucket" / "day.csv").write_text(HEADER + f"k1,{int(time.time())},a,cus_A,1\n")
    return tmp_path


@pytest.fixture
def poller(db_url: str, folder: Path, api: Api) -> Iterator[subprocess.Popen[str]]:  # noqa: F811
    """`meterfix poll` running (it has beaten `waiting`); killed at teardown if still alive."""
    process = subprocess.Popen(
        [MFX, "poll"], env=_env(db_url), cwd=folder, stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for(api.engine, lambda d: d.get("doing") == "waiting")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def _wait_for(engine: Engine, said: Any, timeout: float = 60) -> None:
    beats = table_of(Heartbeat)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            details = connection.execute(select(beats.c.detail)).scalars().all()
        if any(said(dict(d or {})) for d in details):
            return
        time.sleep(0.2)
    raise AssertionError("the poller never beat as expected")


def _newest_detail(engine: Engine) -> dict[str, Any]:
    beats = table_of(Heartbeat)
    query = select(beats.c.detail).order_by(beats.c.last_beat_at.desc()).limit(1)
    with engine.connect() as connection:
        return dict(connection.execute(query).scalar_one() or {})


def _card(api: Api, role: str = "poller") -> str:  # noqa: F811
    found = CSRF.search(api.client.get("/login").get_data(as_text=True))
    if found:
        form = {"token": TOKEN, "csrf_token": found.group(1), "next": "/"}
        api.client.post("/login", data=form)
    html = api.client.get("/").get_data(as_text=True)
    pattern = rf'<div class="card[^"]*" data-testid="{role}-health".*?</div>'
    card = re.search(pattern, html, re.S)
    assert card, html[:2000]
    return re.sub(r"\s+", " ", card.group(0))


def test_a_poller_stopped_by_sigterm_is_shown_stopped_not_running(
    api: Api,  # noqa: F811
    poller: subprocess.Popen[str],
) -> None:
    poller.send_signal(signal.SIGTERM)
    assert poller.wait(timeout=60) == 0

    entry = api.get("/api/health")["heartbeats"]["poller"]
    assert entry["detail"] == {"doing": "stopped"}
    assert entry["state"] == "stopped"
    card = _card(api)
    assert 'class="card muted"' in card and 'data-state="stopped"' in card
    assert ">stopped</span>" in card and "not running: stopped " in card
    assert " s ago" not in card and "exited" not in card


def test_a_poll_once_that_ended_does_not_hide_a_running_poller(
    api: Api,  # noqa: F811
    poller: subprocess.Popen[str],
    db_url: str,
    folder: Path,
) -> None:
    for _ in range(3):  # until the ended pass's beat is the newest (the other beats every 10 s)
        once = subprocess.run(
            [MFX, "poll", "--once"],
            env=_env(db_url),
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert once.returncode == 0, once.stderr
        if _newest_detail(api.engine).get("doing") == "exited":
            break
    assert _newest_detail(api.engine).get("doing") == "exited"

    entry = api.get("/api/health")["heartbeats"]["poller"]
    assert entry["state"] == "running"
    assert entry["detail"].get("doing") not in ("exited", "stopped")
    card = _card(api)
    assert 'data-state="running"' in card and " s ago" in card
    assert "muted" not in card and "bad" not in card and "not running" not in card

    # the running one stops: the role is no longer running (the newest beat says stopped)
    poller.send_signal(signal.SIGTERM)
    assert poller.wait(timeout=60) == 0
    assert api.get("/api/health")["heartbeats"]["poller"]["state"] == "stopped"
