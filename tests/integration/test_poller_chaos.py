"""No usage lost when Stripe has a bad minute: `meterfix poll` as a real process, SIGKILLed
mid-import again and again, while the sandbox's meter event stream answers about 20 % of
requests with a 500, some with a 429 and `Retry-After`, and loses some answers after
accepting the events. Every row of every file must end up accepted exactly once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.conftest import SandboxServer

MFX = str(Path(sys.executable).parent / "meterfix")
STREAM = "/v2/billing/meter_event_stream"
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
FILES, ROWS = 3, 1500  # 15 batches a file
KILLS = 2


def _env(db_url: str, sandbox: SandboxServer, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
    env.update(
        DATABASE_URL=db_url,
        BUCKET_URL=f"file://{tmp_path / 'bucket'}",
        STRIPE_API_KEY=sandbox.api_key,
        STRIPE_WEBHOOK_SECRETS=sandbox.webhook_secret,
        STRIPE_API_BASE=sandbox.bases["api"],
        STRIPE_FILES_BASE=sandbox.bases["files"],
        STRIPE_METER_EVENTS_BASE=sandbox.bases["meter_events"],
        MFX_POLLER="on",
        MFX_POLL_INTERVAL="1",
        MFX_WORK_DIR=str(tmp_path / "work"),
        LOG_LEVEL="WARNING",
    )
    return env


def _write_files(tmp_path: Path) -> set[str]:
    (tmp_path / "bucket").mkdir()
    ts = int(time.time()) - 60
    identifiers = set()
    for number in range(FILES):
        rows = [f"f{number}-{i},{ts},api_requests,cus_A,{i % 7 + 1}\n" for i in range(ROWS)]
        (tmp_path / "bucket" / f"usage-{number}.csv").write_text(HEADER + "".join(rows))
        identifiers |= {f"f{number}-{i}" for i in range(ROWS)}
    return identifiers


def _stream_requests(sandbox: SandboxServer) -> int:
    return sum(1 for r in sandbox.admin.requests() if r["path"] == STREAM)


def _objects(db_url: str) -> list[tuple[str, int, int]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT status, sent, acked_batches FROM bucket_objects ORDER BY key")
            rows: list[Any] = list(conn.execute(query))
            return [(str(s), int(n), int(a)) for s, n, a in rows]
    finally:
        engine.dispose()


def _kill_mid_import(env: dict[str, str], db_url: str, rng: random.Random) -> None:
    """Start `meterfix poll`; once it has acknowledged batches of a file it has not finished,
    wait a moment more (batches are in flight then) and SIGKILL it."""
    before = _objects(db_url)
    process = subprocess.Popen([MFX, "poll"], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _mid_import(objects := _objects(db_url), before) and not _done(objects):
            assert process.poll() is None and time.monotonic() < deadline, "poll never sent"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05))
    finally:
        process.kill()
        process.wait(10)


def _done(objects: list[tuple[str, int, int]]) -> bool:
    return [status for status, _n, _a in objects] == ["imported"] * FILES


def _mid_import(objects: list[tuple[str, int, int]], before: list[tuple[str, int, int]]) -> bool:
    """A file partly acknowledged, further than before this process started."""
    return any(o[0] == "seen" and o[2] > 0 and o not in before for o in objects)


def test_every_row_is_accepted_once_through_faults_and_kills(
    db_url: str, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox = sandbox_server
    sandbox.admin.create_meter("api_requests")
    sandbox.admin.inject_fault("POST", STREAM, 500, count=-1, rate=0.2)
    sandbox.admin.inject_fault("POST", STREAM, 429, count=-1, rate=0.03, retry_after=1)
    sandbox.admin.inject_fault("POST", STREAM, 500, count=-1, rate=0.03, after=True)
    expected = _write_files(tmp_path)
    env = _env(db_url, sandbox, tmp_path)
    rng = random.Random(9)
    for _ in range(KILLS):
        _kill_mid_import(env, db_url, rng)
    deadline = time.monotonic() + 60
    while not _done(_objects(db_url)):
        assert time.monotonic() < deadline, _objects(db_url)
        once = subprocess.run([MFX, "poll", "--once"], env=env, capture_output=True, timeout=60)
        assert once.returncode == 0, once.stderr.decode()[-2000:]
    accepted = [e["identifier"] for e in sandbox.admin.meter_events()]
    assert len(accepted) == len(expected) == FILES * ROWS
    assert set(accepted) == expected
    assert _objects(db_url) == [("imported", ROWS, ROWS // 100)] * FILES
