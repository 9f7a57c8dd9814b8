"""A Stripe (or a proxy in front of it) that answers a byte at a time: every call to it ends
within its deadline and says so, the poller's pass and the worker's task fail that try and are
retried, and no usage is lost or billed twice. Real parts: the sandbox through the real stripe
SDK and requests, behind an HTTP proxy thread (`DrippingProxy`), the poller's pass, a
file:// bucket, SQLite and PostgreSQL. Each test failed (hung) on the code before its fix."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe
from flask import Flask
from sqlmodel import Session, select

from sandbox.defaults import sandbox_bases
from service.adapters import stripe_client, stripe_files
from service.adapters.bucket import open_bucket
from service.adapters.customers import StripeCustomerDirectory
from service.adapters.meter_events import StripeMeterEventSink
from service.adapters.stripe_client import build_stripe_client
from service.adapters.stripe_files import StripeFileStore
from service.adapters.stripe_meters import StripeMeterSource
from service.config import Settings
from service.db import make_engine
from service.errors import StripeFileError
from service.models import BucketObject, PollerBatch
from service.poller.passes import PollerDeps, run_poll_pass
from service.worker.liveness import ITEM_THREAD_PREFIX
from tests.conftest import SandboxServer
from tests.integration.test_remediation_tasks import Service, _import_set_with_errors
from tests.integration.test_source_copy_cut import _task
from tests.servers import serve_wsgi

DRIP_EVERY = 0.5  # seconds between the bytes of a dripping answer (no read ever times out)
STREAM = "/v2/billing/meter_event_stream"
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"


class DrippingProxy:
    """An HTTP proxy in front of the sandbox. An answer to a request whose path holds one of
    `drip` is sent `step` bytes every `every` s (status line, headers, body; by default a
    byte every DRIP_EVERY s), after the sandbox has handled the request in full; others are
    sent at once, the connection kept alive."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.drip: tuple[str, ...] = ()
        self.every, self.step = DRIP_EVERY, 1
        self.dripped: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's names for them
                proxy.forward(self, "GET")

            def do_POST(self) -> None:
                proxy.forward(self, "POST")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def bases(self) -> dict[str, str]:
        return sandbox_bases(f"http://127.0.0.1:{self.server.server_port}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        upstream = HTTPConnection(self.upstream.hostname or "", self.upstream.port, timeout=10)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            upstream.request(method, handler.path, body=body, headers=headers)
            answer = upstream.getresponse()
            content = answer.read()
        finally:
            upstream.close()
        dripping = any(part in handler.path for part in self.drip)
        lines = [f"HTTP/1.1 {answer.status} {answer.reason}"]
        lines += [
            f"{k}: {v}"
            for k, v in answer.getheaders()
            if k.lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        lines += [
            f"Content-Length: {len(content)}",
            f"Connection: {'close' if dripping else 'keep-alive'}",
        ]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content
        if not dripping:
            handler.wfile.write(raw)
            handler.wfile.flush()
            return
        self.dripped.append(handler.path)
        handler.close_connection = True
        try:
            for n in range(0, len(raw), self.step):
                handler.wfile.write(raw[n : n + self.step])
                handler.wfile.flush()
                time.sleep(self.every)
        except OSError:
            pass  # the client hung up


@pytest.fixture
def proxy(sandbox_server: SandboxServer) -> Iterator[DrippingProxy]:
    running = DrippingProxy(sandbox_server.url)
    yield running
    running.close()


@pytest.fixture
def settings(
    sandbox_server: SandboxServer,
    proxy: DrippingProxy,
    make_settings: Callable[..., Settings],
) -> Settings:
    """Settings whose Stripe hosts are the proxy's (SQLite; the poller's test sets its database)."""
    sandbox_server.admin.create_meter("api_requests")
    return make_settings(
        stripe_api_key=sandbox_server.api_key,
        stripe_api_base=proxy.bases["api"],
        stripe_files_base=proxy.bases["files"],
        stripe_meter_events_base=proxy.bases["meter_events"],
    )


def _within(seconds: float, call: Callable[[], Any]) -> tuple[float, Any, BaseException | None]:
    """Run `call` in a thread: how long it took, what it returned and what it raised. A call
    still running after `seconds` fails the test (a hung call is what is tested against)."""
    done: list[tuple[Any, BaseException | None]] = []

    def run() -> None:
        try:
            done.append((call(), None))
        except BaseException as exc:
            done.append((None, exc))

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"still running after {seconds} s"
    return time.monotonic() - started, *done[0]


def test_a_meter_event_batch_answered_a_byte_at_a_time_is_retried_as_a_timeout_is(
    settings: Settings,
    db_url: str,
    sandbox_server: SandboxServer,
    proxy: DrippingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream request's answer dripped a byte at a time: each read got a byte well within
    its 30 s timeout, so the request never ended and the poller's pass hung without end (its
    heartbeat going on: the pass looked alive). Now the request ends at its deadline as a
    dropped connection (`APIConnectionError`), is retried as a timeout is, and the pass fails
    with the reason; Stripe took the events (only the answer was slow), and the next pass
    sends them again under the same identifiers: billed once."""
    monkeypatch.setattr(stripe_client, "CALL_SECONDS", 1.0)
    caplog.set_level(logging.INFO, logger="meterfix")
    settings = settings.model_copy(update={"database_url": db_url})
    ts = int(time.time()) - 60
    source = tmp_path / "upload.tmp"
    source.write_text(HEADER + "".join(f"d-{i},{ts},api_requests,cus_A,1\n" for i in range(5)))
    open_bucket(settings).upload(source, "usage.csv", {})
    engine = make_engine(settings.database_url)
    client = build_stripe_client(settings)

    def deps(at: datetime) -> PollerDeps:
        built = PollerDeps(
            engine=engine,
            settings=settings,
            bucket=open_bucket(settings),
            meters=StripeMeterSource(client),
            sink=StripeMeterEventSink(client, settings, base_delay=0.01, max_attempts=2),
            work_dir=tmp_path / "work",
        )
        built.clock = lambda: at
        return built

    start = datetime.now(UTC)
    proxy.drip = (STREAM,)
    try:
        took, first, error = _within(15, lambda: run_poll_pass(deps(start)))
        assert error is None, error
        assert took < 8
        assert (first.imported, first.retry_files) == (0, 1)
        assert len(proxy.dripped) == 2  # two attempts, each cut at its deadline
        retried = [r.getMessage() for r in caplog.records if "meter_events_retry" in r.getMessage()]
        assert len(retried) == 1 and "error=APIConnectionError" in retried[0]
        with Session(engine) as session:
            stored = session.exec(select(BucketObject)).one()
            batches = session.exec(select(PollerBatch)).all()
        assert stored.error is not None
        assert f"POST {STREAM}: not done within 1 s" in stored.error
        assert [b.acked_at for b in batches] == [None]  # sent, never acknowledged
        first_sent = batches[0].first_sent_at
        taken = sorted(e["identifier"] for e in sandbox_server.admin.meter_events())
        assert taken == [f"d-{i}" for i in range(5)]  # Stripe took them: only the answer dripped
        proxy.drip = ()
        later = run_poll_pass(deps(start + timedelta(minutes=5)))
        with Session(engine) as session:
            [batch] = session.exec(select(PollerBatch)).all()
    finally:
        engine.dispose()
    assert (later.imported, later.sent) == (1, 5)
    assert batch.acked_at is not None
    assert batch.first_sent_at == first_sent  # its 23 h horizon counts from the cut send
    assert sorted(e["identifier"] for e in sandbox_server.admin.meter_events()) == taken
    # the cut attempt's retry and the next pass sent them again, under the same identifiers
    assert sorted(e["identifier"] for e in sandbox_server.admin.duplicates()) == sorted(taken * 2)


@pytest.mark.parametrize("call", ["meters", "customer search", "customer", "file metadata"])
def test_a_stripe_call_answered_a_byte_at_a_time_fails_within_its_deadline(
    settings: Settings,
    sandbox_server: SandboxServer,
    proxy: DrippingProxy,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
) -> None:
    """The poller's meter list, the customer look-ups of a remediation and a file's metadata
    (the SDK: 80 s a read, 2 retries) hung for as long as the answer dripped. Each request
    now ends at its deadline (CALL_SECONDS) as a dropped connection the SDK retries, then
    raises: the caller retries later (a look-up's failure never quarantines a row)."""
    monkeypatch.setattr(stripe_client, "CALL_SECONDS", 1.0)
    client = build_stripe_client(settings)
    file_id = sandbox_server.admin.upload_file(b"a,b\n1,2\n", "f.csv")["id"]
    calls: dict[str, tuple[str, Callable[[], object]]] = {
        "meters": ("/v1/billing/meters", lambda: StripeMeterSource(client).meters()),
        "customer search": (
            "/v1/customers/search",
            lambda: StripeCustomerDirectory(client).search_by_metadata("ext", "acme-42"),
        ),
        "customer": ("/v1/customers/", lambda: StripeCustomerDirectory(client).exists("cus_A")),
        "file metadata": (
            f"/v1/files/{file_id}",
            lambda: StripeFileStore(client, proxy.bases["files"], "sk").file_metadata(file_id),
        ),
    }
    path, run = calls[call]
    proxy.drip = (path,)
    took, _, error = _within(15, run)
    if call == "file metadata":  # the file store's own error, with the status of none
        assert isinstance(error, StripeFileError) and error.status is None, error
        error = error.__cause__
    assert isinstance(error, stripe.APIConnectionError), error
    assert "not done within 1 s (answering too slowly, or not at all)" in str(error)
    assert "acme" not in str(error) and "cus_A" not in str(error)  # no customer text in reasons
    assert took < 8
    assert len(proxy.dripped) == 3  # the SDK's 2 retries, each cut at its deadline
    proxy.drip = ()
    assert run() is not None  # the same client's next call goes through


def test_a_file_download_answered_a_byte_at_a_time_fails_within_its_deadline(
    settings: Settings, sandbox_server: SandboxServer, proxy: DrippingProxy, tmp_path: Path
) -> None:
    """A Files API download (requests, 300 s a read) hung for as long as the contents
    dripped. It ends within its time limit (here 2 s) and as long more as its bytes take at
    MIN_TRANSFER_RATE, failing with StripeFileError (the task is retried), nothing left on
    disk."""
    content = b"identifier,error_code\n" + b"id-1,no_meter\n" * 10
    file_id = sandbox_server.admin.upload_file(content, "failed.csv")["id"]
    store = StripeFileStore(
        build_stripe_client(settings),
        settings.stripe_files_base,
        settings.stripe_api_key,
        transfer_seconds=2,
    )
    dest = tmp_path / "dl" / "failed.csv"
    proxy.drip = ("/contents",)
    took, _, error = _within(15, lambda: store.download_file(file_id, dest))
    assert isinstance(error, StripeFileError), error
    assert str(error).startswith(f"file {file_id}: contents not read within 2 s")
    assert took < 6
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []
    proxy.drip = ()
    store.download_file(file_id, dest)
    assert dest.read_bytes() == content


def test_a_large_file_read_steadily_is_given_the_time_its_bytes_take(
    settings: Settings,
    sandbox_server: SandboxServer,
    proxy: DrippingProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The download's deadline grows with its size, as the bucket's streamed GET's does: 4 KB
    read steadily at ~4 KB/s past a 0.5 s limit is read whole (1 KB/s more: 4.5 s in all)."""
    monkeypatch.setattr(stripe_files, "MIN_TRANSFER_RATE", 1000)
    content = b"identifier\n" + b"".join(b"r%07d\n" % n for n in range(500))
    file_id = sandbox_server.admin.upload_file(content, "big.csv")["id"]
    store = StripeFileStore(
        build_stripe_client(settings),
        settings.stripe_files_base,
        settings.stripe_api_key,
        transfer_seconds=0.5,
    )
    dest = tmp_path / "big.csv"
    proxy.drip, proxy.every, proxy.step = ("/contents",), 0.05, 200
    took, _, error = _within(15, lambda: store.download_file(file_id, dest))
    assert error is None, error
    assert took > 0.5  # past the limit alone
    assert dest.read_bytes() == content


def test_a_task_whose_file_drips_is_failed_and_its_thread_ends(
    sandbox_server: SandboxServer,
    proxy: DrippingProxy,
    db_url: str,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> None:
    """A remediation task whose failed-records file dripped was failed at MFX_TASK_TIME_LIMIT
    by the worker (`call_with_time_limit`), but its thread, abandoned, read on for as long as
    the file dripped (the worker process must be restarted to end it). The download now ends
    at its own deadline (the same limit): the abandoned thread ends with it."""
    sandbox_server.admin.create_meter("api_requests")
    settings = make_settings(
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=sandbox_server.webhook_secret,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=proxy.bases["files"],
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
        mfx_task_time_limit=2,
    )
    with serve_wsgi(make_app(settings)) as running:
        service = Service(settings, sandbox_server, running.url)
        try:
            service.deliver(_import_set_with_errors(service, "impset_drip"))
            proxy.drip = ("/contents",)
            _, _, error = _within(15, service.drain)
            assert error is None, error
            task = _task(service)
            name = f"{ITEM_THREAD_PREFIX}{task.id}"
            items = [t for t in threading.enumerate() if t.name == name]  # none: ended
            for item in items:
                item.join(5)
            assert not any(t.is_alive() for t in items), "the abandoned item's thread reads on"
        finally:
            service.engine.dispose()
    assert (task.status, task.attempts) == ("pending", 1)
    assert task.last_error is not None and "time limit" in task.last_error.lower()
