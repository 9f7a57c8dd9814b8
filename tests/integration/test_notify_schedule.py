"""Scheduling on PostgreSQL: several senders, one message per window and channel; a sender
killed mid-send is taken over after its lease (at most one repeat, never lost); and real
`meterfix worker` processes sending the digest of the window that just ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from service.adapters.channels import build_channels
from service.db import make_engine
from service.models._types import utcnow
from service.models.alerts import DigestRun
from service.notify.digests import DigestSender
from service.notify.windows import DigestSchedule
from tests.integration.notify_helpers import NOW, SlackReceiver, seed_activity, smtp_server
from tests.servers import serve_wsgi

MFX = str(Path(sys.executable).parent / "meterfix")


@pytest.fixture
def slack() -> Iterator[tuple[SlackReceiver, str]]:
    receiver = SlackReceiver()
    with serve_wsgi(receiver) as server:
        yield receiver, f"{server.url}/services/T/B/X"


def _rows(engine: Engine) -> list[DigestRun]:
    with Session(engine) as session:
        return list(session.exec(select(DigestRun).order_by(DigestRun.channel)).all())


def test_two_senders_one_window_one_message_per_channel(
    pg_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    engines = [make_engine(pg_url) for _ in range(2)]  # two processes' worth of engines
    seed_activity(engines[0])
    with smtp_server() as (mailbox, port):
        settings = make_settings(
            database_url=pg_url,
            slack_webhook_url=url,
            smtp_url=f"smtp://127.0.0.1:{port}",
            digest_email_to="ops@example.com",
        )
        senders = [
            DigestSender(e, settings, build_channels(settings), instance=f"w{n}", clock=lambda: NOW)
            for n, e in enumerate(engines)
        ]
        start = threading.Barrier(2)
        outcomes: list[Any] = []

        def run(sender: DigestSender) -> None:
            start.wait()
            outcomes.extend(sender.tick())

        threads = [threading.Thread(target=run, args=(s,)) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for sender in senders:  # and again, as the next scheduled runs would
            assert sender.tick() == []
    assert len(receiver.bodies) == 1 and len(mailbox.received) == 1
    assert sorted(o.status for o in outcomes) == ["sent", "sent"]
    assert [(r.channel, r.status) for r in _rows(engines[0])] == [
        ("email", "sent"),
        ("slack", "sent"),
    ]
    for engine in engines:
        engine.dispose()


KILLED_SENDER = """
import sys
from datetime import timedelta
from service.config import Settings
from service.db import make_engine
from service.adapters.channels import build_channels
from service.notify.digests import DigestSender
from tests.integration.notify_helpers import NOW
settings = Settings(_env_file=None, database_url=sys.argv[1], slack_webhook_url=sys.argv[2])
engine = make_engine(sys.argv[1])
sender = DigestSender(engine, settings, build_channels(settings), instance="doomed",
                      lease=timedelta(seconds=1), clock=lambda: NOW)
sender.tick()
"""


def test_a_sender_killed_mid_send_is_taken_over_after_its_lease(
    pg_url: str, make_settings: Any, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    engine = make_engine(pg_url)
    seed_activity(engine)
    receiver.gate = threading.Event()  # the first POST hangs until the sender is dead
    gate = receiver.gate
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    doomed = subprocess.Popen([sys.executable, "-c", KILLED_SENDER, pg_url, url], env=env)
    try:
        assert receiver.entered.wait(20), "the sender never posted"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        gate.set()
        doomed.kill()
    [row] = _rows(engine)
    assert (row.status, row.claimed_by) == ("sending", "doomed")
    settings = make_settings(database_url=pg_url, slack_webhook_url=url)
    channels = build_channels(settings)
    # within its lease nobody takes it; after it, the restarted sender sends the window
    now = NOW
    assert DigestSender(engine, settings, channels, instance="new", clock=lambda: now).tick() == []
    now = NOW + timedelta(seconds=2)
    outcomes = DigestSender(engine, settings, channels, instance="new", clock=lambda: now).tick()
    assert [o.status for o in outcomes] == ["sent"]
    [row] = _rows(engine)
    assert (row.status, row.attempts, row.claimed_by) == ("sent", 2, "new")
    assert len(receiver.bodies) == 2  # the message cut off by the crash, and its one repeat
    engine.dispose()


def test_two_worker_processes_send_the_window_once(
    pg_url: str, tmp_path: Path, slack: tuple[SlackReceiver, str]
) -> None:
    receiver, url = slack
    engine = make_engine(pg_url)
    window = DigestSchedule("1d", "UTC").latest_window(utcnow())
    seed_activity(engine, window.start)
    with smtp_server() as (mailbox, port):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "MFX_"))}
        env |= {
            "DATABASE_URL": pg_url,
            "SLACK_WEBHOOK_URL": url,
            "SMTP_URL": f"smtp://127.0.0.1:{port}",
            "DIGEST_EMAIL_TO": "ops@example.com",
            "DIGEST_EVERY": "1d",
            "MFX_WORKER_INTERVAL": "0.2",
        }
        logs = [(tmp_path / f"worker{n}.log").open("w") for n in range(2)]
        workers = [
            subprocess.Popen([MFX, "worker"], env=env, cwd=tmp_path, stderr=log) for log in logs
        ]
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                len(receiver.bodies) < 2 or len(mailbox.received) < 2
            ):
                time.sleep(0.1)
            time.sleep(1.0)  # a second sender would have sent by now
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                assert worker.wait(30) == 0
            for log in logs:
                log.close()
    errors = [
        line
        for n in range(2)
        for line in (tmp_path / f"worker{n}.log").read_text().splitlines()
        if '"level": "ERROR"' in line or "Traceback" in line
    ]
    assert errors == []
    # one digest and one critical message (the seeded open alert) per channel, not two
    slack_texts = sorted(body["text"].split(",")[0] for body in receiver.bodies)
    assert slack_texts == ["CRITICAL: in/x.csv: the poller gave up", "meterfix digest"]
    subjects = sorted(str(m["Subject"]).split(",")[0] for _, _, m in mailbox.received)
    assert subjects == ["[meterfix] CRITICAL: in/x.csv: the poller gave up", "meterfix digest"]
    assert {(r.channel, r.status) for r in _rows(engine)} == {("email", "sent"), ("slack", "sent")}
    engine.dispose()


def test_the_leader_lock_is_one_per_installation(pg_url: str) -> None:
    from service.notify.leader import leading
    from tests.conftest import PG_URL

    engines = [make_engine(pg_url), make_engine(pg_url), make_engine(PG_URL)]  # last: public
    with (
        leading(engines[0]) as first,  # entered in order: the first one leads
        leading(engines[1]) as second,
        leading(engines[2]) as elsewhere,
    ):
        assert (bool(first), bool(second), bool(elsewhere)) == (True, False, True)
    with leading(engines[1]) as again:
        assert again
    for engine in engines:
        engine.dispose()
