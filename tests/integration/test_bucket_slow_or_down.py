"""A bucket that answers a byte at a time, or not at all, and a database that is down: the
poller fails within a bound and says so (a critical alert once it has failed for longer than
MFX_HEARTBEAT_SILENCE, resolved by the next pass that works), the worker backs off, and each
logs a repeated failure once. Real parts: moto S3 behind a TCP proxy thread (`FaultyProxy`),
the poll loop, the worker's loop and silence watch, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from sqlalchemy import Engine, select
from sqlmodel import Session

from service.adapters import s3_bucket
from service.adapters.bucket import open_bucket
from service.adapters.s3_bucket import S3Bucket, S3Limits
from service.config import Settings
from service.db import make_engine
from service.db.migrate import upgrade
from service.models import Alert, BucketObject
from service.models._types import utcnow
from service.models.health import Heartbeat
from service.poller.job import PASSES_FAILING, FailingPasses, poll_forever
from service.poller.passes import PassReport, build_poller_deps
from service.runtime import Runtime
from service.worker.drain_loop import run_loop
from service.worker.loop import InboxWorker
from service.worker.silence import check_heartbeats

BUCKET = "slow"
DRIP_EVERY = 0.5  # seconds between the bytes of a dripping answer (reads never time out)
SLOW_BYTES, SLOW_EVERY = 200, 0.05  # a slow answer, read steadily: ~4 KB/s
SHORT = S3Limits(connect=2, read=2, attempts=2, call=3, transfer=3)


class FaultyProxy:
    """A TCP proxy on a loopback port to `target`. Its `mode`, read as a connection is
    accepted: `pass`, `drip` (the answer a byte every DRIP_EVERY s), `slow` (SLOW_BYTES every
    SLOW_EVERY s), `drip_uploads` (the answer to a PUT or a POST a byte every DRIP_EVERY s,
    the others at once: the HEAD before an upload), `slow_in` (the client's bytes, an upload's
    body, SLOW_BYTES every SLOW_EVERY s) or `refuse`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.mode = target, "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # the server stopped, a hung client still trying
                client.close()
                continue
            mode, uploading = self.mode, threading.Event()  # a PUT or a POST being answered
            pace_in = (SLOW_EVERY, SLOW_BYTES) if mode == "slow_in" else (0.0, 1)
            threading.Thread(
                target=_pipe, args=(client, upstream, *pace_in, None, uploading), daemon=True
            ).start()
            drip = DRIP_EVERY if mode in ("drip", "drip_uploads") else 0.0
            drip = SLOW_EVERY if mode == "slow" else drip
            step = SLOW_BYTES if mode == "slow" else 1
            only = uploading if mode == "drip_uploads" else None
            threading.Thread(
                target=_pipe, args=(upstream, client, drip, step, only), daemon=True
            ).start()


_UPLOADS = (b"PUT", b"POST")
_METHODS = (b"GET", b"HEAD", b"DELETE", *_UPLOADS)


def _pipe(
    source: socket.socket,
    dest: socket.socket,
    drip: float,
    step: int = 1,
    only: threading.Event | None = None,
    uploading: threading.Event | None = None,
) -> None:
    """`source`'s bytes to `dest`, `step` every `drip` s (`only` while that is set); each
    request `source` sends sets `uploading` when it is a PUT or a POST, clears it when not."""
    try:
        while data := source.recv(65536):
            method = data.split(b" ", 1)[0]
            if uploading is not None and method in _METHODS:
                (uploading.set if method in _UPLOADS else uploading.clear)()
            pace = drip if only is None or only.is_set() else 0.0
            for start in range(0, len(data), step if pace else len(data)):
                dest.sendall(data[start : start + step] if pace else data)
                time.sleep(pace)
    except OSError:
        pass
    finally:
        for end in (source, dest):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultyProxy]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="usage/day.csv", Body=b"identifier,timestamp\nr1,1\n" * 20)
    faulty = FaultyProxy((host, int(port)))
    yield faulty
    faulty.close()


def _within(seconds: float, call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run `call` in a thread; how long it took and what it raised. A call still running
    after `seconds` fails the test (a hung call is what is tested against)."""
    done: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            done.append(exc)
        else:
            done.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"still running after {seconds} s"
    return time.monotonic() - started, done[0]


def test_a_listing_dripping_a_byte_at_a_time_fails_within_its_deadline(
    proxy: FaultyProxy,
) -> None:
    """Each read got a byte well within its timeout, so botocore (60 s a read, 5 tries)
    never gave up: the poller's listing hung for as long as the answer dripped."""
    bucket = S3Bucket(BUCKET, "usage", f"http://127.0.0.1:{proxy.port}", SHORT)
    proxy.mode = "drip"
    took, error = _within(15, lambda: list(bucket.list_objects()))
    assert isinstance(error, TimeoutError), error
    assert str(error).startswith("s3://slow/usage/ (a listing page): not done within 3 s")
    assert took < 8
    proxy.mode = "pass"
    assert [o.key for o in bucket.list_objects()] == ["usage/day.csv"]


def test_an_object_dripping_a_byte_at_a_time_fails_within_the_task_time_limit(
    proxy: FaultyProxy, make_settings: Callable[..., Settings]
) -> None:
    """A streamed GET (the poller's copy of an object) read to its end within
    MFX_TASK_TIME_LIMIT, through the bucket the settings open."""
    settings = make_settings(
        bucket_url=f"s3://{BUCKET}/usage",
        s3_endpoint_url=f"http://127.0.0.1:{proxy.port}",
        mfx_task_time_limit=3,
    )
    bucket = open_bucket(settings)
    proxy.mode = "drip"

    def read() -> None:
        with bucket.open_read("usage/day.csv") as stream:
            stream.read()

    took, error = _within(15, read)
    assert isinstance(error, TimeoutError), error
    assert "s3://slow/usage/day.csv (GET, read to its end): not done within 3 s" in str(error)
    assert took < 8
    proxy.mode = "pass"
    with bucket.open_read("usage/day.csv") as stream:
        assert stream.read().startswith(b"identifier,timestamp\nr1,1\n")


def test_a_large_object_read_steadily_is_given_the_time_its_bytes_take(
    proxy: FaultyProxy, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed GET's deadline was MFX_TASK_TIME_LIMIT in all, whatever the object's size:
    a 1 GiB object read steadily below 1.1 MiB/s failed at 900 s, every pass, until the poller
    gave it up. It is given as long more as its bytes take at MIN_TRANSFER_RATE (here 2 KB/s:
    16 KB read at ~4 KB/s, a second's limit)."""
    body = b"".join(b"r%05d,1764000000\n" % n for n in range(1000))  # 16 KB
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, config=Config(s3={"addressing_style": "path"})
    )
    s3.put_object(Bucket=BUCKET, Key="usage/big.csv", Body=body)
    monkeypatch.setattr(s3_bucket, "MIN_TRANSFER_RATE", 2000)
    limits = replace(SHORT, transfer=1)
    bucket = S3Bucket(BUCKET, "usage", f"http://127.0.0.1:{proxy.port}", limits)
    proxy.mode = "slow"
    with bucket.open_read("usage/big.csv") as stream:
        assert stream.read() == body


def _alerts(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        return list(session.exec(select(Alert)).scalars())  # type: ignore[call-overload]


def test_passes_failing_longer_than_the_silence_raise_one_alert_resolved_by_a_pass_that_works(
    proxy: FaultyProxy,
    db_url: str,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bucket that does not answer: each pass failed and logged `poller.pass_failed` every
    poll interval while the poller beat `waiting`; no alert fired. Now the passes fail
    within the listing's deadline, one line says so, a critical alert (its first failure's
    time and the reason) is raised once they have failed for MFX_HEARTBEAT_SILENCE, and the
    first pass that works resolves it and says how long it lasted."""
    settings = make_settings(
        database_url=db_url,
        bucket_url=f"s3://{BUCKET}/usage",
        s3_endpoint_url=f"http://127.0.0.1:{proxy.port}",
        mfx_poller="index",
        mfx_heartbeat_silence=2,
    )
    runtime = Runtime(settings)
    bucket = S3Bucket(BUCKET, "usage", settings.s3_endpoint_url, SHORT)
    deps = replace(build_poller_deps(runtime), bucket=bucket)
    reports: list[PassReport] = []
    stop = threading.Event()
    proxy.mode = "drip"
    caplog.set_level(logging.INFO, logger="meterfix")
    poller = threading.Thread(
        target=poll_forever, args=(deps, stop, 0.2, reports.append), daemon=True
    )
    try:
        poller.start()
        _wait_for(lambda: any(a.alert_key == PASSES_FAILING for a in _alerts(runtime.engine)), 20)
        [alert] = _alerts(runtime.engine)
        failed = [r for r in caplog.records if "poller.pass_failed" in r.getMessage()]
        proxy.mode = "pass"
        _wait_for(lambda: bool(reports), 20)
        resolved = _alerts(runtime.engine)
        with Session(runtime.engine) as session:
            listed = session.exec(select(BucketObject.key)).scalars().all()  # type: ignore[call-overload]
    finally:
        stop.set()
        poller.join(10)
        runtime.close()
    assert not poller.is_alive()
    assert (alert.severity, alert.status, alert.count) == ("critical", "open", 1)
    assert alert.message.startswith("every poller pass has failed since 20")
    assert alert.message.endswith(
        "UTC: TimeoutError: s3://slow/usage/ (a listing page): not done within 3 s "
        "(answering too slowly, or not at all)"
    )
    assert "\n" not in alert.message
    assert len(failed) == 1  # two passes or more failed, logged once
    assert [(a.alert_key, a.status) for a in resolved] == [(PASSES_FAILING, "resolved")]
    assert reports[0].indexed == 1 and listed == ["usage/day.csv"]
    recovered = [
        r.getMessage() for r in caplog.records if "poller.pass_recovered" in r.getMessage()
    ]
    assert len(recovered) == 1 and "after_seconds=" in recovered[0]


def _wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.1)


def test_a_poller_stuck_in_a_pass_while_the_worker_beats_is_said_stuck(
    db_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    """The worker beats, its poller thread's last beat said it was in a pass: the silence
    alert said to check that `meterfix worker` was running, which it was."""
    now = utcnow()
    since = now - timedelta(seconds=400)
    with Session(db_engine) as session:
        session.add(Heartbeat(instance="w1", role="worker", last_beat_at=now))
        detail: dict[str, object] = {"doing": "pass"}
        session.add(Heartbeat(instance="p1", role="poller", last_beat_at=since, detail=detail))
        session.commit()
    check_heartbeats(db_engine, make_settings(mfx_heartbeat_silence=300, mfx_poller="on"), now)
    [alert] = _alerts(db_engine)
    assert (alert.alert_key, alert.severity) == ("heartbeat.silent:poller", "critical")
    assert alert.message == (
        f"the poller has been in one pass since {since:%Y-%m-%d %H:%M:%S} UTC (a bucket or "
        "Stripe call that does not return) while the worker runs; restart the worker (or "
        "`meterfix poll`)"
    )


def test_the_worker_backs_off_a_database_that_is_down_and_logs_it_once(
    tmp_path: Path, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The database down: the worker tried it every MFX_WORKER_INTERVAL and logged
    `worker.database_error` each time. It now waits twice as long as it has been down (at
    most 30 s), logs it once, and says when it is back and after how long."""
    url = f"sqlite:///{tmp_path / 'gone' / 'meterfix.db'}"  # no such directory: down
    settings = make_settings(database_url=url, mfx_worker_interval=0.2)
    engine = make_engine(url)
    worker = InboxWorker(engine, settings)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="meterfix")
    loop = threading.Thread(target=run_loop, args=(worker, stop, lambda _: []), daemon=True)
    try:
        loop.start()
        time.sleep(3)
        (tmp_path / "gone").mkdir()
        upgrade(url)  # back
        _wait_for(lambda: "worker.database_recovered" in caplog.text, 15)
    finally:
        stop.set()
        loop.join(10)
        engine.dispose()
    lines = [r.getMessage() for r in caplog.records]
    errors = [line for line in lines if line.startswith("worker.database_error")]
    assert len(errors) == 1, errors  # tried at 0, 0.2, 0.6, 1.8 s: logged once
    [recovered] = [line for line in lines if line.startswith("worker.database_recovered")]
    assert "failures=4" in recovered or "failures=5" in recovered, recovered


def test_a_standby_poller_neither_raises_a_stale_alert_nor_leaves_one_open(db_url: str) -> None:
    """Two workers: the standby's passes find the leader's under way (`ran` False). Its one
    failed pass (a database blip) was never cleared, so a single blip hours later read
    "every poller pass has failed since <hours ago>", critical; and the leader, having
    resolved the alert once, never tried again: it stayed open."""
    engine = make_engine(db_url)
    try:
        standby, leader = FailingPasses(engine, silence=1), FailingPasses(engine, silence=1)
        standby.failed("OperationalError: a blip")
        standby.passed(ran=False)  # the leader's pass under way: this one did not fail
        leader.passed(ran=True)
        time.sleep(1.2)
        standby.failed("OperationalError: another blip, much later")
        assert _alerts(engine) == []
        standby.passed(ran=False)
        standby.failed("OperationalError: the database down")  # for longer than the silence
        time.sleep(1.2)
        standby.failed("OperationalError: the database down")
        [alert] = _alerts(engine)
        assert (alert.alert_key, alert.status) == (PASSES_FAILING, "open")
        leader.passed(ran=True)  # the database back: the leader's pass works
        assert [(a.alert_key, a.status) for a in _alerts(engine)] == [(PASSES_FAILING, "resolved")]
    finally:
        engine.dispose()
