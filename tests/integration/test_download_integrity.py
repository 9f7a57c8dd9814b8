"""A Stripe file whose contents arrive cut short: a files host (here a proxy in front of the
sandbox's) that answers without a Content-Length and closes the connection early. Read as
whole, a failed-records file's last rows were neither corrected nor quarantined, nothing said;
the copy is held against the file object's `size` and the task retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlmodel import Session, SQLModel, select

from sandbox.events import build_import_set_event
from service.config import Settings
from service.db import make_engine
from service.models import Alert, CorrectionAudit, InboxEvent, QuarantinedRow, RemediationRun
from service.worker.loop import InboxWorker
from tests.conftest import SandboxServer
from tests.servers import serve_wsgi

M = TypeVar("M", bound=SQLModel)
HEADER = "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value,error_code\n"
ROWS = (
    "a1,{ms},api_requests,cus_1,5,timestamp_in_future\n",
    'a2,{s},api_requests,cus_1,"1,234",meter_event_invalid_value\n',
    "a3,{s},api_requests,cus_1,abc,meter_event_invalid_value\n",
)


class CuttingProxy:
    """An HTTP proxy in front of a host: while `cut_at` is set, a file's contents are answered
    without a Content-Length, `Connection: close`, and only their first `cut_at` bytes."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.cut_at: int | None = None
        self.cut: list[str] = []  # the paths answered cut short
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name for it
                proxy.forward(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.upstream.path}"

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        upstream = HTTPConnection(self.upstream.hostname or "", self.upstream.port, timeout=10)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
            upstream.request("GET", handler.path, headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
        finally:
            upstream.close()
        cut = self.cut_at is not None and handler.path.endswith("/contents")
        handler.send_response_only(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                handler.send_header(key, value)
        if cut:
            self.cut.append(handler.path)
            body = body[: self.cut_at]
        else:
            handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        handler.close_connection = True

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Service:
    def __init__(self, settings: Settings, sandbox: SandboxServer, url: str) -> None:
        self.settings, self.sandbox, self.url = settings, sandbox, url
        self.engine = make_engine(settings.database_url)

    def deliver_failed_records(self, impset: str, content: str, rows: int) -> None:
        file = self.sandbox.admin.upload_file(content, "failed_records.csv", "data_management")
        body = {
            "id": impset,
            "object": "data_management.import_set",
            "status": "succeeded_with_errors",
            "result": {"errors": {"file": file["id"], "row_count": rows}},
        }
        stored = self.sandbox.admin.add_event(
            build_import_set_event("data_management.import_set.succeeded", body)
        )
        assert self.sandbox.admin.deliver(stored["id"], f"{self.url}/webhooks")["status"] == 200

    def drain(self) -> None:
        InboxWorker(self.engine, self.settings).drain()

    def task(self) -> InboxEvent:
        with Session(self.engine) as session:
            return session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()

    def retry_now(self) -> None:
        with Session(self.engine) as session:
            task = session.exec(select(InboxEvent).where(InboxEvent.style == "task")).one()
            task.next_attempt_at = None
            session.add(task)
            session.commit()

    def rows(self, model: type[M]) -> list[M]:
        with Session(self.engine) as session:
            return list(session.exec(select(model)).all())


@pytest.fixture
def proxy(sandbox_server: SandboxServer) -> Iterator[CuttingProxy]:
    with CuttingProxy(sandbox_server.bases["files"]) as running:
        yield running


@pytest.fixture
def service(
    sandbox_server: SandboxServer,
    proxy: CuttingProxy,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[Service]:
    sandbox_server.admin.create_meter("api_requests")
    settings = make_settings(
        database_url=db_url,
        stripe_api_key=sandbox_server.api_key,
        stripe_webhook_secrets=sandbox_server.webhook_secret,
        stripe_api_base=sandbox_server.bases["api"],
        stripe_files_base=proxy.url,
        stripe_meter_events_base=sandbox_server.bases["meter_events"],
        mfx_work_dir=str(tmp_path / "work"),
    )
    with serve_wsgi(make_app(settings)) as running:
        svc = Service(settings, sandbox_server, running.url)
        yield svc
        svc.engine.dispose()


def test_a_failed_records_file_cut_short_is_retried_not_remediated(
    service: Service, proxy: CuttingProxy
) -> None:
    now = int(time.time()) - 60
    content = (HEADER + "".join(ROWS)).format(ms=now * 1000, s=now)
    whole = len(content.encode())
    proxy.cut_at = len((HEADER + ROWS[0]).format(ms=now * 1000, s=now).encode())
    service.deliver_failed_records("impset_cut", content, rows=3)
    service.drain()
    assert len(proxy.cut) == 1  # the contents went through the proxy, cut
    task = service.task()
    assert (task.status, task.attempts) == ("pending", 1)  # retried, as a connection error
    assert task.last_error is not None
    assert f"downloaded {proxy.cut_at} bytes where its file object says {whole}" in task.last_error
    assert service.rows(CorrectionAudit) == [] and service.rows(QuarantinedRow) == []
    assert [r.status for r in service.rows(RemediationRun)] == []  # nothing read as the file
    proxy.cut_at = None  # the files host answers whole again
    service.retry_now()
    service.drain()
    assert service.task().status == "done"
    [run] = service.rows(RemediationRun)
    assert (run.status, run.input_rows, run.corrected, run.quarantined) == ("done", 3, 2, 1)
    audit = service.rows(CorrectionAudit)
    assert sorted(a.new_identifier for a in audit) == ["a1-mfx1", "a2-mfx1"]
    assert _rows_short(service) == []  # the file held every row Stripe counted


def _rows_short(service: Service) -> list[tuple[str, str, int]]:
    alerts = service.rows(Alert)
    return [
        (a.severity, a.subject, a.rows)
        for a in alerts
        if a.alert_key.startswith("remediation:rows_short:")
    ]


def test_a_failed_records_file_holding_fewer_rows_than_stripe_counted_is_said(
    service: Service,
) -> None:
    now = int(time.time()) - 60
    content = (HEADER + "".join(ROWS[:2])).format(ms=now * 1000, s=now)
    service.deliver_failed_records("impset_short", content, rows=3)  # whole, but 2 of 3 rows
    service.drain()
    assert service.task().status == "done"  # the rows it holds are remediated all the same
    [run] = service.rows(RemediationRun)
    assert (run.status, run.input_rows, run.corrected) == ("done", 2, 2)
    assert _rows_short(service) == [
        (
            "warning",
            "import set impset_short: its failed-records file held 2 of the 3 rows Stripe counted",
            1,
        )
    ]
