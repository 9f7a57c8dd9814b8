"""The other notification jobs on a real database: heartbeat silence (the worker's watch,
alerting through notify), retention, run-level alerts, and the `meterfix digest` command."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from service.db import make_engine
from service.models import CorrectionAudit, QuarantinedRow, RemediationRun
from service.models._types import utcnow
from service.models.alerts import Alert, DigestRun
from service.models.health import Heartbeat
from service.models.inbox import InboxEvent
from service.notify.alerts import raise_alert, resolve_alert
from service.notify.retention import purge_expired
from service.notify.runs import alert_for_run
from service.worker import silence
from service.worker.silence import check_heartbeats
from tests.integration.notify_helpers import SlackReceiver, seed_activity
from tests.servers import serve_wsgi


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _alerts(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert).order_by(Alert.id)).scalars())  # type: ignore[call-overload]


def _count(engine: Engine, model: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one()[0])  # type: ignore[call-overload]


def test_heartbeat_silence_raises_once_and_resolves(engine: Engine, make_settings: Any) -> None:
    now = utcnow()
    with Session(engine) as session:
        session.add(
            Heartbeat(instance="w1", role="worker", last_beat_at=now - timedelta(seconds=400))
        )
        session.add(Heartbeat(instance="w2", role="worker", last_beat_at=now - timedelta(days=3)))
        session.add(Heartbeat(instance="p1", role="poller", last_beat_at=now - timedelta(days=1)))
        session.commit()
    settings = make_settings(mfx_heartbeat_silence=300)  # MFX_POLLER=off: poller not watched
    ages = check_heartbeats(engine, settings, now)
    assert list(ages) == ["worker"] and 399 < (ages["worker"] or 0) < 401
    check_heartbeats(engine, settings, now + timedelta(seconds=5))
    [alert] = _alerts(engine)
    assert (alert.alert_key, alert.severity, alert.status, alert.count) == (
        "heartbeat.silent:worker",
        "critical",
        "open",
        1,
    )  # noticed twice, one incident, raised once
    with Session(engine) as session:
        beat = session.exec(select(Heartbeat).where(Heartbeat.instance == "w1")).scalar_one()  # type: ignore[call-overload]
        beat.last_beat_at = now
        session.add(beat)
        session.commit()
    check_heartbeats(engine, settings, now + timedelta(seconds=6))
    assert [a.status for a in _alerts(engine)] == ["resolved"]
    polled = make_settings(mfx_heartbeat_silence=300, mfx_poller="on")
    check_heartbeats(engine, polled, now + timedelta(seconds=7))
    assert [(a.alert_key, a.status) for a in _alerts(engine)] == [
        ("heartbeat.silent:worker", "resolved"),
        ("heartbeat.silent:poller", "open"),
    ]
    # the poller runs inside `meterfix worker` with MFX_POLLER=on (`make run`): the message
    # said only "check that `meterfix poll` is running"
    worker, poller = (a.message for a in _alerts(engine))
    assert worker.endswith("check that `meterfix worker` is running"), worker
    assert poller.endswith(
        "check that `meterfix worker` (with MFX_POLLER=on) or `meterfix poll` is running"
    ), poller


def test_the_worker_watches_for_silence_until_stopped(
    engine: Engine, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meterfix worker` runs the check beside its scheduled jobs (service.worker.silence),
    and purges the heartbeats of instances gone for longer than MFX_RETENTION_DAYS."""
    monkeypatch.setattr(silence, "CHECK_EVERY_SECONDS", 0.05)
    with Session(engine) as session:
        old = utcnow() - timedelta(seconds=400)
        session.add(Heartbeat(instance="w1", role="worker", last_beat_at=old))
        gone = utcnow() - timedelta(days=91)
        session.add(Heartbeat(instance="w0", role="worker", last_beat_at=gone))
        session.commit()
    stop = threading.Event()
    thread = silence.start_silence_watch(engine, make_settings(mfx_heartbeat_silence=300), stop)
    deadline = time.monotonic() + 10
    while not _alerts(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert [(a.alert_key, a.status) for a in _alerts(engine)] == [
        ("heartbeat.silent:worker", "open")
    ]
    with Session(engine) as session:
        left = session.exec(select(Heartbeat.instance)).scalars().all()  # type: ignore[call-overload]
    assert left == ["w1"]


def test_retention_purges_old_records_in_batches(engine: Engine) -> None:
    now = utcnow()
    old, recent = now - timedelta(days=100), now - timedelta(days=1)
    with Session(engine) as session:
        for n, (status, when) in enumerate(
            [("done", old), ("dead", old), ("ignored", old), ("pending", old), ("done", recent)]
        ):
            session.add(
                InboxEvent(
                    event_id=f"evt_{n}",
                    event_type="t",
                    style="thin",
                    body="{}",
                    status=status,
                    received_at=when,
                )
            )
        runs = [
            RemediationRun(
                run_key=f"r{n}",
                trigger="cli",
                source="s",
                status="done",
                created_at=when,
                finished_at=when,
            )
            for n, when in enumerate([old, recent])
        ]
        session.add_all(runs)
        session.flush()
        for run in runs:
            assert run.id is not None
            for row in range(3):
                session.add(
                    CorrectionAudit(
                        run_id=run.id, source="s", row_number=row, code="c", rule="r", field="f"
                    )
                )
                session.add(
                    QuarantinedRow(
                        run_id=run.id,
                        source="s",
                        row_number=row,
                        code="c",
                        reason="r",
                        created_at=run.finished_at,
                        # dated: a row without a timestamp is never purged (no age)
                        record={"timestamp": "1700000000"},
                    )
                )
        session.add(
            Alert(
                alert_key="a_old",
                severity="info",
                kind="k",
                subject="s",
                message="m",
                status="resolved",
                resolved_at=old,
            )
        )
        session.add(
            Alert(
                alert_key="a_open",
                severity="critical",
                kind="k",
                subject="s",
                message="m",
                created_at=old,
                last_seen_at=old,
            )
        )
        session.commit()
    deleted = purge_expired(engine, 90, now=now, batch=2)
    # the old done and ignored events; pending work and the dead letter stay (replayable)
    assert deleted["inbox_events"] == 2 and deleted["correction_audit"] == 3
    assert deleted["quarantined_rows"] == 3 and deleted["alerts"] == 1
    assert _count(engine, InboxEvent) == 3 and _count(engine, CorrectionAudit) == 3
    assert _count(engine, RemediationRun) == 2  # runs stay: lineage and counts
    assert [a.alert_key for a in _alerts(engine)] == ["a_open"]
    assert purge_expired(engine, 90, now=now)["inbox_events"] == 0


def _run(engine: Engine, quarantined: int, corrected: int) -> RemediationRun:
    with Session(engine) as session:
        run = RemediationRun(
            run_key=f"import_set:impset_9:file_{quarantined}_{corrected}",
            trigger="import_set.succeeded",
            source="file_9",
            status="done",
            input_rows=quarantined + corrected,
            corrected=corrected,
            quarantined=quarantined,
            by_code={"no_meter": {"corrected": corrected, "quarantined": quarantined}},
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        for n in range(quarantined):
            session.add(
                QuarantinedRow(
                    run_id=run.id,
                    source="s",
                    row_number=n,
                    code="no_meter",
                    reason="r",
                    meter="api_requests",
                    customer="cus_1",
                )
            )
        session.commit()
        session.refresh(run)
        return run


def test_run_level_alerts(engine: Engine, make_settings: Any) -> None:
    settings = make_settings(mfx_quarantine_alert_rows=3)
    outputs = [
        {"kind": "corrected", "key": "corrected/impset_9/a.csv"},
        {"kind": "quarantine", "key": "quarantine/impset_9/a.csv"},
    ]
    for quarantined, corrected in [(3, 1), (1, 1), (0, 2), (0, 0)]:
        alert_for_run(engine, settings, _run(engine, quarantined, corrected), outputs)
    alerts = _alerts(engine)
    assert [a.severity for a in alerts] == ["critical", "warning", "info"]  # nothing for (0, 0)
    critical = alerts[0]
    assert (critical.code, critical.meter, critical.customer, critical.rows) == (
        "no_meter",
        "api_requests",
        "cus_1",
        3,
    )
    assert critical.links["import_set"] == "impset_9" and critical.links["run"]
    assert critical.links["objects"] == ["corrected/impset_9/a.csv"]
    assert critical.links["quarantine"] == "quarantine/impset_9/a.csv"


def test_the_digest_command(sqlite_url: str, make_settings: Any, make_app: Any) -> None:
    engine = make_engine(sqlite_url)
    seed_activity(engine, utcnow() - timedelta(hours=20))
    app = make_app(make_settings(database_url=sqlite_url))
    result = app.test_cli_runner().invoke(args=["digest", "--dry-run", "--since", "24h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("meterfix digest, ")
    assert "10 received, 4 valid, 3 corrected, 3 quarantined" in result.output
    assert _count(engine, DigestRun) == 0  # a dry run records nothing
    result = app.test_cli_runner().invoke(args=["digest"])
    assert result.exit_code == 1 and "no channel configured" in result.output
    receiver = SlackReceiver()
    receiver.answers = [("400 Bad Request", [])]
    with serve_wsgi(receiver) as server:
        url = f"{server.url}/services/T/B/SECRETPART"
        app = make_app(make_settings(database_url=sqlite_url, slack_webhook_url=url))
        failed = app.test_cli_runner().invoke(args=["digest", "--channel", "slack"])
        sent = app.test_cli_runner().invoke(args=["digest", "--since", "23h"])
    assert failed.exit_code == 1 and "slack failed: HTTP 400" in failed.output
    lines = failed.output.strip().splitlines()
    assert lines[-1] == "Error: slack failed: HTTP 400: error"  # the channel named once
    assert not [x for x in lines if "SECRETPART" in x and "POST /services/" not in x]
    assert sent.exit_code == 0 and sent.output.endswith("\nslack: sent\n")
    assert receiver.bodies[-1]["blocks"][0]["type"] == "header"
    engine.dispose()


def test_an_alert_whose_key_is_longer_than_its_column_is_raised_counted_and_resolved(
    engine: Engine,
) -> None:
    """Alert keys name objects (`poller.taken_again:<key>:<etag>`, `run:error_report:…:<key>`)
    and S3 keys run to 1,024 bytes: PostgreSQL refused a key past 512 characters, and what
    raised the alert failed with it (the poller's pass, the run)."""
    long_a = "poller.taken_again:" + "usage/" + "a" * 700 + ".csv:etag1"
    long_b = long_a.replace("etag1", "etag2")  # alike for 512 characters: another alert
    for key in (long_a, long_a, long_b):
        raise_alert(
            engine, key=key, severity="warning", kind="poller.taken_again", subject="s", message="m"
        )
    alerts = _alerts(engine)
    assert [(len(a.alert_key), a.count, a.status) for a in alerts] == [
        (512, 2, "open"),
        (512, 1, "open"),
    ]
    assert (
        alerts[0].alert_key.startswith(long_a[:400]) and alerts[0].alert_key != alerts[1].alert_key
    )
    assert resolve_alert(engine, long_a) and not resolve_alert(engine, long_a)
    assert [a.status for a in _alerts(engine)] == ["resolved", "open"]
