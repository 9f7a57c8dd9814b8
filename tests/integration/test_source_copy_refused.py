"""Stripe's copy of the file it took (read to tell a later version of the object from the one
Stripe took) answered with an error: a 503 or a 429 (its file object or its contents) fails
the try, which is retried; a 401 or a 403 (the key refused, not the file) fails it too, and
the task ends dead-lettered with the reason; only a 404 or a 410 is "Stripe has no copy".
Taken for none, the object was judged by its time alone and its failed records left to
Stripe's connector, never corrected, nothing said. Real parts: the sandbox behind proxies
that answer the copy's requests with an error (`ErrorProxy`), the web and the worker, a
file:// bucket, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import stripe
from flask import Flask
from sqlmodel import Session

from sandbox.events import build_import_set_event
from service.adapters.stripe_files import StripeFileStore
from service.config import Settings
from service.errors import StripeFileError
from service.jobs.inputs import JobDeps, _stripe_copy
from service.models import BucketObject, CorrectionAudit, InboxEvent, RemediationRun
from tests.conftest import SandboxServer
from tests.integration.test_remediation_tasks import Service, _import_set_with_errors
from tests.integration.test_source_copy_cut import HEADER, _task
from tests.servers import free_port, serve_wsgi


class ErrorProxy:
    """An HTTP proxy in front of a host: a request whose path holds `only` (when set) is
    answered `status` with a Stripe error body; every other is forwarded as it came."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.only, self.status = "", 503
        self.answered: list[str] = []  # the paths answered with the error
        self.seen: list[str] = []  # every request, as "METHOD path"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's names
                proxy.forward(self)

            def do_POST(self) -> None:
                proxy.forward(self)

            def do_DELETE(self) -> None:
                proxy.forward(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.upstream.path}"

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        sent = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.seen.append(f"{handler.command} {handler.path}")
        if self.only and self.only in handler.path:
            self.answered.append(f"{handler.command} {handler.path}")
            status, headers = self.status, [("Content-Type", "application/json")]
            kind = "api_error" if status >= 500 else "invalid_request_error"
            body = json.dumps({"error": {"type": kind, "message": f"made up {status}"}}).encode()
        else:
            upstream = HTTPConnection(self.upstream.hostname or "", self.upstream.port, timeout=10)
            try:
                ahead = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
                upstream.request(handler.command, handler.path, body=sent or None, headers=ahead)
                answer = upstream.getresponse()
                status, headers, body = answer.status, answer.getheaders(), answer.read()
            finally:
                upstream.close()
        handler.send_response_only(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()

    def __enter__(self) -> ErrorProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Proxied(Service):
    api: ErrorProxy
    files: ErrorProxy


@pytest.fixture
def service(
    sandbox_server: SandboxServer,
    db_url: str,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    make_app: Callable[[Settings], Flask],
) -> Iterator[Proxied]:
    sandbox_server.admin.create_meter("api_requests")
    with (
        ErrorProxy(sandbox_server.bases["api"]) as api,
        ErrorProxy(sandbox_server.bases["files"]) as files,
    ):
        settings = make_settings(
            database_url=db_url,
            stripe_api_key=sandbox_server.api_key,
            stripe_webhook_secrets=sandbox_server.webhook_secret,
            stripe_api_base=api.url,
            stripe_files_base=files.url,
            stripe_meter_events_base=sandbox_server.bases["meter_events"],
            mfx_max_attempts=2,
        )
        with serve_wsgi(make_app(settings)) as running:
            svc = Proxied(settings, sandbox_server, running.url)
            svc.api, svc.files = api, files
            yield svc
            svc.engine.dispose()


def _copy_rewritten(service: Service) -> str:
    """An import set whose object was written again after its event with the very bytes
    Stripe took (a folder synced again), delivered; Stripe's copy's file id."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    taken = HEADER + f"a1,{now * 1000},api_requests,cus_1,5\na2,{now},api_requests,cus_1,x\n"
    (bucket / "daily.csv").write_text(taken)
    later = time.time() + 5
    os.utime(bucket / "daily.csv", (later, later))
    source = str(service.sandbox.admin.upload_file(taken, "daily.csv")["id"])
    event = _import_set_with_errors(service, "impset_copy_refused")
    event["data"]["object"].update({"source_object": "daily.csv", "file": source})  # type: ignore[index]
    service.deliver(event)
    return source


def _due_now(service: Service, task: InboxEvent) -> None:
    with Session(service.engine) as session:
        stored = session.get(InboxEvent, task.id)
        assert stored is not None
        stored.next_attempt_at = None
        session.add(stored)
        session.commit()


def _proxy(service: Proxied, where: str) -> ErrorProxy:
    return service.api if where == "file object" else service.files


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("where", ["file object", "contents"])
def test_a_copy_answered_503_or_429_fails_the_try_and_is_read_at_the_next(
    service: Proxied, where: str, status: int
) -> None:
    """Stripe busy (503) or limiting us (429) on its copy's file object or contents: the try
    fails with that status in its reason, no row is corrected or left to the connector; the
    next try, answered, corrects the rows the object holds."""
    source = _copy_rewritten(service)
    proxy = _proxy(service, where)
    proxy.only, proxy.status = (source if where == "file object" else f"{source}/contents"), status
    service.drain()

    assert proxy.answered, "the copy was never asked for"
    task = _task(service)
    assert (task.status, task.attempts) == ("pending", 1), (task.status, task.outcome)
    assert task.last_error is not None
    assert f"file {source}: " in task.last_error and f"HTTP {status}" in task.last_error
    assert "left to Stripe's connector" not in str(task.outcome)
    assert service.rows(CorrectionAudit) == []

    proxy.only = ""  # Stripe answers again
    _due_now(service, task)
    service.drain()
    task = _task(service)
    assert task.status == "done", task.last_error
    assert "left to Stripe's connector" not in str(task.outcome)
    audit = [a for a in service.rows(CorrectionAudit) if isinstance(a, CorrectionAudit)]
    assert sorted({a.new_identifier for a in audit}) == ["a1-mfx1", "a2-mfx1"]


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (401, "the API key was refused"),
        (403, "the API key may not read files"),
    ],
)
@pytest.mark.parametrize("where", ["file object", "contents"])
def test_a_copy_refused_to_our_key_is_not_taken_for_none(
    service: Proxied, where: str, status: int, why: str
) -> None:
    """A key rolled (401) or restricted without Files read (403) was read as "Stripe has no
    copy": the object was judged by its time alone, a later version, and its failed records
    a1 and a2 left to Stripe's connector, the task done, nothing said. Each try fails now
    with the reason, and after MFX_MAX_ATTEMPTS (2 here) the task is dead-lettered with it."""
    source = _copy_rewritten(service)
    proxy = _proxy(service, where)
    proxy.only, proxy.status = (source if where == "file object" else f"{source}/contents"), status
    service.drain()
    task = _task(service)
    assert (task.status, task.attempts) == ("pending", 1), (task.status, task.outcome)
    _due_now(service, task)
    service.drain()

    task = _task(service)
    assert (task.status, task.attempts) == ("dead", 2), (task.status, task.outcome)
    assert task.last_error is not None
    assert f"file {source}: " in task.last_error
    assert f"HTTP {status}: {why}" in task.last_error
    assert "left to Stripe's connector" not in str(task.outcome)
    assert service.rows(CorrectionAudit) == []


def test_a_whole_file_failure_reads_its_copy_s_file_object_once(service: Proxied) -> None:
    """A file Stripe failed whole, traced to our object by its copy's file name: `download`
    read the copy's file object, then `objects_like` read it again (two requests to Stripe,
    and two chances to fail the try). Read once now, and handed along."""
    now = int(time.time()) - 60
    bucket = Path(service.settings.bucket_url.removeprefix("file://"))
    (bucket / "in").mkdir(parents=True)
    content = HEADER + f"b1,{now},api_requests,cus_1,5\nb2,{now * 1000},api_requests,cus_1,3\n"
    (bucket / "in" / "usage-7.csv").write_text(content)
    with Session(service.engine) as session:  # what the poller (index mode) recorded
        session.add(BucketObject(key="in/usage-7.csv", etag="e1", size=10, status="indexed"))
        session.commit()
    copy = str(service.sandbox.admin.upload_file(content, "usage-7.csv")["id"])
    body = {
        "id": "impset_once",
        "object": "data_management.import_set",
        "status": "failed",
        "failed_reason": "Unparseable file",
        "file": copy,
    }
    service.deliver(build_import_set_event("data_management.import_set.failed", body))
    service.drain()

    [run] = [r for r in service.rows(RemediationRun) if isinstance(r, RemediationRun)]
    assert (run.source, run.status, run.corrected) == ("in/usage-7.csv", "done", 1)
    asked = f"GET /_host/api/v1/files/{copy}"
    file_object = [r for r in service.api.seen if r.split("?")[0] == asked]
    assert len(file_object) == 1, service.api.seen
    assert [r for r in service.files.seen if copy in r] == [
        f"GET /_host/files/v1/files/{copy}/contents"
    ]


class _Files:
    """A StripeFiles whose file object answers `status`."""

    def __init__(self, status: int | None) -> None:
        self.status = status

    def file_metadata(self, file_id: str) -> dict[str, Any]:
        raise StripeFileError(f"file {file_id}: metadata: HTTP {self.status}", status=self.status)

    def download_file(self, file_id: str, dest: Path) -> None:
        raise AssertionError("not read without its file object")


@pytest.mark.parametrize("status", [None, 400, 401, 403, 408, 409, 429, 500, 503])
def test_only_404_and_410_are_no_copy(status: int | None, tmp_path: Path) -> None:
    deps = JobDeps(run=cast(Any, None), files=cast(Any, _Files(status)))
    with pytest.raises(StripeFileError):
        _stripe_copy(deps, "file_x", tmp_path)


@pytest.mark.parametrize("status", [404, 410])
def test_404_and_410_are_no_copy(status: int, tmp_path: Path) -> None:
    deps = JobDeps(run=cast(Any, None), files=cast(Any, _Files(status)))
    assert _stripe_copy(deps, "file_x", tmp_path) is None


def test_a_reason_says_no_answer_not_http_none(sandbox_server: SandboxServer) -> None:
    """A file object that had no answer read 'metadata: HTTP None: …'."""
    refused = f"http://127.0.0.1:{free_port()}/_host/api"
    client = stripe.StripeClient(
        sandbox_server.api_key, base_addresses={"api": refused}, max_network_retries=0
    )
    files = StripeFileStore(client, refused, sandbox_server.api_key)
    with pytest.raises(StripeFileError) as info:
        files.file_metadata("file_" + "2" * 24)
    assert "metadata: no answer: " in str(info.value) and "None" not in str(info.value)
